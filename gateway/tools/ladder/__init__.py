"""`lanegate ladder`: a reproducible step load, its knee, and a gate report.

Pure parts turn recorded requests and host samples into numbers and verdicts: `stats`,
`knee`, `gates`, `compare`, `prompts`, `mix`, `host_formats` (pmset/sysctl/iostat/sysfs
parsers), `host_summary` (a rung's samples), `tail` (why a tail moved), `provenance`
(comparable runs, history), `markdown` (report.md), `guidellm` (benchmarks.json). The shell
does the HTTP, the sampling and the files: `runner`, `signals` and `host_probe`, `session`,
`report`, `plot`, `endpoint`, `meta`, `signing`, `command` (a run) and `verbs` (compare,
history, sign, verify). `gateway.commands.ladder` wires them to the command line.
"""
