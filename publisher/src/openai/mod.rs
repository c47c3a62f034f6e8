//! OpenAI Responses client: the streaming request with retries, and the SSE stream around it.
