"""The commands' task functions (`run(cfg)` for eval, train, sweep; `main(argv)` for the tools)
and what they share (`common`, `checks`). Each task runs with a composed config, in or out of
the CLI; no other module imports a task."""
