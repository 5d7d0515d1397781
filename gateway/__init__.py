"""lanegate: an always-on, lane-aware gateway in front of local LLM servers."""

__version__ = "0.1.0"
