import pytest

from finetune.core.config import TrainingConfig, parse_config
from finetune.core.errors import UserError
from recipes.sentiment import SentimentConfig


def test_yaml_then_flags_precedence(tmp_path):
    user_yaml = tmp_path / "my.yaml"
    user_yaml.write_text("learning_rate: 3e-5\nbatch_size: 8\nlabels: [neg, pos]\n")  # YAML reads 3e-5 as a string
    config = parse_config(SentimentConfig, ["--config", str(user_yaml), "--batch_size", "16"])
    assert config.learning_rate == pytest.approx(3e-5)  # user YAML beats the recipe YAML
    assert config.batch_size == 16  # a flag beats both
    assert config.labels == ["neg", "pos"]
    assert config.model == "minilm"  # from the recipe's YAML


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--no_such_field", "1"], "no_such_field"),
        (["--batch_size", "many"], "batch_size"),
        (["--batch_size", "0"], "batch_size"),
        (["--learning_rate", "-1"], "learning_rate"),
        (["--mixed_precision", "fp8"], "mixed_precision"),
        (["--resume", "--overwrite"], "resume"),
    ],
)
def test_bad_flags_are_user_errors(argv, needle):
    with pytest.raises(UserError, match=needle):
        parse_config(TrainingConfig, argv)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--skip_pretrained", "true", "--compare", "false"], "nothing to train"),
        (["--freeze_base", "true", "--lora", "true"], "pick one"),
    ],
)
def test_contradicting_study_arm_flags_are_user_errors(argv, needle):
    with pytest.raises(UserError, match=needle):
        parse_config(SentimentConfig, argv)


def test_unknown_yaml_key_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(UserError, match="learning_rat"):
        parse_config(SentimentConfig, ["--config", str(bad)])


def test_yaml_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        parse_config(SentimentConfig, ["--config", str(bad)])


def test_text_generation_refuses_the_study_arms_it_cannot_run_in_one_line(tmp_path):
    """--skip_pretrained (its report frames the scratch LM by the pretrained one's perplexity before and after) and
    --freeze_base (a causal LM's head is its tied input embedding: nothing would train) are one-line errors, not a
    silent full run; so are they for any recipe that does not say it honours them."""
    from tiny_models import tiny_gpt2

    from finetune.models.loading import freeze_base
    from recipes.text_generation import TextGenerationConfig

    for flag in ("skip_pretrained", "freeze_base"):
        with pytest.raises(UserError, match=f"--{flag} is not supported by this recipe .TextGenerationConfig."):
            TextGenerationConfig(**{flag: True})
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2(tmp_path / "gpt2"))
    with pytest.raises(UserError, match="leaves nothing to train") as error:
        freeze_base(model)
    assert "\n" not in str(error.value)
