"""A simulated inference host (`lanegate simulate`) for tests, the demo and benchmarks.

`engine` is the pure performance model (slots, FIFO queue, prefill/decode rates, memory and
swap); `runner` drives it on asyncio; `wire` frames tokens as Ollama and OpenAI-compatible
servers do; `server` is the ASGI app; `profiles` loads the calibrated `profiles.yaml`.
"""
