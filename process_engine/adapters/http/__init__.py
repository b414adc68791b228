"""HTTP: the control and read API, and the server that hosts it."""
