"""``seal serve`` and ``seal ask``: the served stack over an OpenAI-compatible endpoint, and one question to it.

seal serve --run-dir runs/demo-<time>                  # the demo's model and store; key file made in its keys/
seal ask --run-dir runs/demo-<time> "Who founded Ostrevane?"
seal serve --store /runs/store --model PATH --api-keys-file keys/api.keys --host 0.0.0.0 --port 8000
seal ask --base-url http://host:8000/v1 "question"     # key from $SEAL_API_KEY (or --api-keys-file)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from apps.cli_config import add_config_arguments, add_threads_argument, apply_threads, build_config, validate_config
from protocol.signing import VERIFY_KEY
from student.serve_config import ServeConfig, ServeError

RUN_KEYS_FILE = Path("keys") / "api.keys"
"""A run folder's API key file (made by ``seal serve --run-dir`` when absent, read by ``seal ask --run-dir``)."""
ASK_KEY_ENV = "SEAL_API_KEY"


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    """The ``serve`` and ``ask`` subcommands."""
    serve = sub.add_parser("serve", help="OpenAI-compatible HTTP API over the served (audited) stack.")
    serve.add_argument("--run-dir", type=Path, help="A demo or run folder: its student model and store, its key file.")
    serve.add_argument("--config", help="YAML file of settings; flags override it.")
    add_threads_argument(serve)
    add_config_arguments(serve, ServeConfig)

    ask = sub.add_parser("ask", help="Ask the served model one question (through `seal serve`'s endpoint).")
    ask.add_argument("question", help="The question.")
    ask.add_argument("--run-dir", type=Path, help="The run folder `seal serve --run-dir` serves (its key file).")
    ask.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="The endpoint (default: loopback).")
    ask.add_argument("--api-keys-file", type=Path, help=f"Key file (its first key); else ${ASK_KEY_ENV}.")
    ask.add_argument("--model", default="seal", help="Served model name (default: seal).")
    ask.add_argument("--max-tokens", type=int, default=64, help="Most tokens in the answer (default: 64).")
    ask.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy, as the auditor grades.")
    ask.add_argument(
        "--wait", type=float, default=60.0, help="Seconds to wait for an endpoint still starting (default: 60)."
    )


def run_serve_command(args: argparse.Namespace) -> int:
    """Dispatch ``serve`` or ``ask``; a configuration problem is one line on stderr, exit status 2."""
    try:
        return _serve(args) if args.command == "serve" else _ask(args)
    except ServeError as exc:
        print(f"seal {args.command}: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from student.openai_server import run
    from student.serve_config import create_api_key_file, load_api_keys

    apply_threads(args.threads)
    config = build_config(ServeConfig, args)
    if args.run_dir is not None:
        config = _from_run_dir(config, args)
        if config.verify_keys is None and (args.run_dir / "keys" / VERIFY_KEY).exists():
            config.verify_keys = args.run_dir / "keys"  # the run's auditor: check every served verdict
        if config.api_keys_file is None:
            config.api_keys_file = args.run_dir / RUN_KEYS_FILE
            create_api_key_file(config.api_keys_file)
            print(f"API keys: {config.api_keys_file} (seal ask --run-dir {args.run_dir} reads it)", file=sys.stderr)
    run(config, load_api_keys(config.api_keys_file))
    return 0


def _from_run_dir(config: ServeConfig, args: argparse.Namespace) -> ServeConfig:
    """The run's student model, device, dtype and store, unless given as flags."""
    student_file = args.run_dir / "config" / "student.yaml"
    if not student_file.exists():
        raise ServeError(f"--run-dir {args.run_dir}: no config/student.yaml (not a seal demo or run folder)")
    student: dict[str, Any] = yaml.safe_load(student_file.read_text())
    given = {key[4:] for key, value in vars(args).items() if key.startswith("cfg:") and value is not None}
    values = config.model_dump()
    for field in ("model", "device", "dtype", "store"):
        if field not in given and field in student:
            values[field] = student[field]
    return validate_config(ServeConfig, values)


def _ask(args: argparse.Namespace) -> int:
    import openai

    from library.qa_format import ANSWER_INSTRUCTION

    messages = [{"role": "system", "content": ANSWER_INSTRUCTION}, {"role": "user", "content": args.question}]
    deadline = time.monotonic() + args.wait
    while True:  # `seal serve ... &` just started: its key file and its port come up after the model loads
        try:
            client = openai.OpenAI(base_url=args.base_url, api_key=_ask_key(args), max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model=args.model, messages=messages, max_tokens=args.max_tokens, temperature=args.temperature
            )
            break
        except (openai.APIConnectionError, KeyFileMissing) as exc:
            if time.monotonic() >= deadline:
                if isinstance(exc, KeyFileMissing):
                    raise
                raise ServeError(
                    f"no endpoint at {args.base_url}: start `seal serve` first (or pass --base-url)"
                ) from None
            time.sleep(1.0)
        except openai.APIStatusError as exc:
            raise ServeError(f"{exc.status_code}: {exc.message}") from None
    reply = raw.parse()
    print(reply.choices[0].message.content)
    print(
        f"(served version {reply.system_fingerprint}; GET {args.base_url}/served lists its adapters and verdicts)",
        file=sys.stderr,
    )
    return 0


class KeyFileMissing(ServeError):
    """The key file is not there (yet: ``seal serve --run-dir`` writes it when it starts)."""


def _ask_key(args: argparse.Namespace) -> str:
    file = args.api_keys_file or (args.run_dir / RUN_KEYS_FILE if args.run_dir else None)
    if file is not None:
        if not file.exists():
            raise KeyFileMissing(f"no key file {file}: start `seal serve` (with --run-dir it makes one)")
        return next(line.strip() for line in file.read_text().splitlines() if line.strip() and line[0] != "#")
    if os.environ.get(ASK_KEY_ENV):
        return os.environ[ASK_KEY_ENV]
    raise ServeError(f"no API key: pass --run-dir or --api-keys-file, or set {ASK_KEY_ENV}")
