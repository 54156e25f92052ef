"""The HTTP client of the endpoint and what it sends: inputs, audio, the logic of the client commands."""
