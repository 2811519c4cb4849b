"""One router per HTTP resource: each parses a request into a job, submits it and renders the result."""
