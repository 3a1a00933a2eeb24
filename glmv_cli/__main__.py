"""`python -m glmv_cli` is the `glmv` command."""

from glmv_cli.cli import main

main()
