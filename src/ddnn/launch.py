"""`ddnn-torchrun [torchrun options] COMMAND ...`: torchrun for ddnn, whose errors stay one line.

torchrun answers any worker's non-zero exit with a traceback of its own and a ChildFailedError report
(about 40 lines) after the worker's message, and exits with 1. ddnn's processes already print a bad
input's one line once (from rank 0) and exit with 2; this launcher runs torchrun's own launch
(torch.distributed.run) with its log quieted, passes that exit code on and adds nothing to the line.
A process that fails in another way (a crash, a signal) gets one line naming its rank and exit code.
"""

import logging
import sys

COMMANDS = ("train", "eval", "profile", "export", "select", "calibrate", "serve", "report", "list")


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(torchrun's options, ddnn's command and its arguments): ddnn's part starts at its command."""
    for i, arg in enumerate(argv):
        if arg in COMMANDS or arg == "--debug":
            return argv[:i], argv[i:]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, command = split_argv(argv)
    if not command:
        print("ddnn: error: give a ddnn command after torchrun's options, e.g. ddnn-torchrun --standalone "
              f"--nproc_per_node=2 train --out runs/ddp (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for name in list(logging.root.manager.loggerDict):  # the agent's progress and failure log lines
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args([*options, "--module", "ddnn", *command])
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode
        if code != 2:  # 2: ddnn's own one-line error, already printed by rank 0
            how = f"signal {-failure.exitcode}" if failure.exitcode < 0 else f"exit code {code}"
            print(f"ddnn: error: process rank {rank} failed ({how}); its output above says why", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
