"""One module per `lanegate` subcommand; each exposes `register(subparsers)`.

A command module registers its parser and sets `func` to a callable taking the parsed
namespace and returning the process exit code. Heavy imports stay inside the command's
function so `lanegate --help` and small commands start fast.
"""
