"""`reasoning-dspy` command line. Heavy imports happen inside each command, so `--help` is instant.

One typer app per command group, merged into `app` in the order `--help` lists them.
"""

from __future__ import annotations

import typer

from reasoning_dspy.cli.db import db_app
from reasoning_dspy.cli.pipeline import pipeline_app
from reasoning_dspy.cli.reasoner import reasoner_app
from reasoning_dspy.cli.runs import runs_app
from reasoning_dspy.cli.services import services_app
from reasoning_dspy.cli.steer import steer_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find, score and steer a language model's reasoning features with sparse autoencoders.",
)
for _commands in (pipeline_app, runs_app, steer_app, services_app):
    app.add_typer(_commands)
app.add_typer(db_app, name="db")
app.add_typer(reasoner_app, name="reasoner")
