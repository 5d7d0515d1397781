"""Running the process: the server, HTTP limits, drain, reload, control plane, OpenAPI, launchd."""
