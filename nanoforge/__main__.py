"""`python -m nanoforge ...` (and `accelerate launch -m nanoforge train ...`)."""

from nanoforge.cli import main

main()
