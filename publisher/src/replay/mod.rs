//! A local OpenAI-compatible server that replays recorded Responses streams, synthesizes long answers and injects faults.
