"""One module per `sentinel` command; each exposes register(subparsers) and run(args) -> int."""
