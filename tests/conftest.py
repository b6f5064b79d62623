"""Suite-wide settings.

No console width is set here: rich takes it from ``COLUMNS`` (else 80 off a terminal), and so does pytest
for its own output, which must fit the terminal it runs in. Off a terminal the CLI's text lines are not
wrapped at all (``qdeploy_cli._common.console``); the few tests that read whole rows of a wide table pass
``env={"COLUMNS": ...}`` to their ``CliRunner.invoke``, which sets it for that invocation only.
"""
