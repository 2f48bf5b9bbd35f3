"""The sandbox's command line: `python -m sandbox` and `manage.py sandbox_api`. No Django
imports."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Mapping, Sequence

from feeds.mparticle.schema import DEFAULT_BATCHES_PER_SECOND
from sandbox.server import CONFIG_PATH, CREDENTIALS_ENV, STATE_PATH, FaultConfig, Sandbox

# -- command line ------------------------------------------------------------------------------------------------


def parse_credential(text: str) -> tuple[str, str]:
    key, colon, secret = text.strip().partition(":")
    if not colon or not key or not secret:
        raise ValueError(f"credential must look like KEY:SECRET, got {text!r}")
    return key, secret


def _credential_arg(text: str) -> tuple[str, str]:
    try:
        return parse_credential(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _key_limit_arg(text: str) -> tuple[str, float]:
    key, equals, rate = text.strip().rpartition("=")
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if not equals or not key or value <= 0:
        raise argparse.ArgumentTypeError(f"a key limit must look like KEY=RATE with RATE > 0, got {text!r}")
    return key, value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The sandbox options; pass a parser (e.g. a management command's) to add them to it."""
    parser = parser or argparse.ArgumentParser(prog="python -m sandbox", description="Run a fake mParticle Events API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default 8765; 0 = any free port)")
    parser.add_argument(
        "--rate-limit",
        type=_non_negative,
        default=float(DEFAULT_BATCHES_PER_SECOND),
        help=f"batches per second per API key (default {DEFAULT_BATCHES_PER_SECOND}; 0 = unlimited)",
    )
    parser.add_argument("--burst", type=_non_negative, default=None, help="bucket size in batches (default: rate)")
    parser.add_argument(
        "--key-limit",
        action="append",
        type=_key_limit_arg,
        default=[],
        metavar="KEY=RATE",
        help="a limit of its own for one API key, in batches per second (repeatable; change it while running with "
        f"POST {CONFIG_PATH})",
    )
    parser.add_argument(
        "--latency", type=_non_negative, default=0.0, help="seconds added to every API answer (default 0)"
    )
    parser.add_argument(
        "--lean", action="store_true", help="keep only ids and counts of what is received, not the batches"
    )
    parser.add_argument("--no-retry-after", action="store_true", help="leave Retry-After out of every 429")
    parser.add_argument(
        "--no-use-header", action="store_true", help="leave X-mp-rate-limit-percentage-used out of every success"
    )
    parser.add_argument(
        "--credential",
        action="append",
        type=_credential_arg,
        default=[],
        metavar="KEY:SECRET",
        help=f"accepted API key and secret (repeatable; also read from ${CREDENTIALS_ENV}, comma-separated)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection (default 0)")
    parser.add_argument("--throttle-rate", type=_fraction, default=0.0, help="fraction answered 429 at random")
    parser.add_argument("--error-rate", type=_fraction, default=0.0, help="fraction answered 500/502/503")
    parser.add_argument("--drop-rate", type=_fraction, default=0.0, help="fraction dropped without an answer")
    parser.add_argument("--slow-rate", type=_fraction, default=0.0, help="fraction answered after --slow-seconds")
    parser.add_argument("--slow-seconds", type=_non_negative, default=2.0, help="delay of slow answers (default 2)")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of random 429s (default 1)")
    return parser


def sandbox_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Sandbox:
    """Build (not start) a Sandbox from parsed options. Raises ValueError for bad credentials or fault rates."""
    environ = os.environ if environ is None else environ
    credentials: dict[str, str] = {}
    for pair in environ.get(CREDENTIALS_ENV, "").split(","):
        if pair.strip():
            key, secret = parse_credential(pair)
            credentials[key] = secret
    # Command-line credentials win over the environment for the same key.
    credentials.update(dict(args.credential or []))
    faults = FaultConfig(
        seed=args.seed,
        throttle_rate=args.throttle_rate,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        retry_after=None if args.no_retry_after else args.retry_after,
    )
    return Sandbox(
        credentials,
        rate_limit=args.rate_limit or None,
        burst=args.burst or None,
        faults=faults,
        send_retry_after=not args.no_retry_after,
        report_use=not args.no_use_header,
        key_limits=dict(args.key_limit or []),
        latency=args.latency,
        keep_batches=not args.lean,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    try:
        sandbox = sandbox_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if not sandbox.api_keys:
        print(f"warning: no credentials (use --credential or ${CREDENTIALS_ENV}); every request will get 403")

    def ready(url: str) -> None:
        keys = ", ".join(sandbox.api_keys) or "none"
        print(f"mParticle sandbox on {url}/v2 and {url}/s2s/v2 (keys: {keys}); state at {url}{STATE_PATH}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        sandbox.serve_forever(args.host, args.port, ready=ready)
