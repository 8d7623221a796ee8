"""`finetune push RUN_DIR --repo_id NAME`: upload a finished run to the Hugging Face Hub, with its model card.

What is uploaded and how a failure is explained: finetune/reporting/hub.py.
"""

from __future__ import annotations

import argparse
import sys

from finetune.core.errors import CommandParser, user_errors_exit
from finetune.reporting.hub import WHAT_CHOICES, push_run, select_files


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="finetune push",
        description="Push a finished run (model, card, results) to the Hugging Face Hub. Token: --token, HF_TOKEN "
        "or `hf auth login`. Endpoint: --hub_endpoint, HF_ENDPOINT or https://huggingface.co.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory training wrote")
    parser.add_argument("--repo_id", required=True, help="NAME or NAMESPACE/NAME on the Hub (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--hub_endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument(
        "--token",
        default=None,
        help="Hub token (prefer HF_TOKEN or `hf auth login`: argv is visible to other users of the machine)",
    )
    parser.add_argument(
        "--what",
        choices=WHAT_CHOICES,
        default="auto",
        help="model | adapter | merged (RUN_DIR/merged at the repo root) | auto (default)",
    )
    parser.add_argument(
        "--include_scratch", action="store_true", help="also upload the from-scratch comparison model, under scratch/"
    )
    parser.add_argument(
        "--keep_card", action="store_true", help="upload RUN_DIR/README.md as it is instead of regenerating it"
    )
    parser.add_argument("--commit_message", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`finetune push ...` (argv without the word "push"); exits 2 with one line on a user error."""
    with user_errors_exit():
        args = build_parser().parse_args(argv)
        url = push_run(
            args.run_dir,
            args.repo_id,
            private=args.private,
            endpoint=args.hub_endpoint,
            token=args.token,
            what=args.what,
            include_scratch=args.include_scratch,
            keep_card=args.keep_card,
            commit_message=args.commit_message,
        )
        files = select_files(args.run_dir, args.what, args.include_scratch)
        print(f"pushed {len(files)} files from {args.run_dir} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
