"""`python -m adhere` is the `adhere` command."""

from adhere.cli import main

main()
