"""`lanegate ladder`: a reproducible step load, its knee, and a gate report.

Pure parts (`stats`, `knee`, `gates`, `compare`, `prompts`) turn recorded requests into
numbers and verdicts; the shell (`runner`, `signals`, `report`, `plot`, `endpoint`) does the
HTTP, the sampling and the files. `gateway.commands.ladder` wires them to the command line.
"""
