use serde_json::{json, Value};

use super::*;
use crate::model::test_engine;

/// Serves the shared engine on a free port; returns the responses URL.
async fn start() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(test_engine().clone(), Defaults::default());
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1/responses")
}

/// The events of a streamed answer, parsed from its SSE body.
async fn events(url: &str, body: Value) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let data = frame
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .unwrap();
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_streamed_answer_has_the_responses_event_sequence() {
    let url = start().await;
    let events = events(
        &url,
        json!({"model": "anything", "stream": true, "temperature": 0,
               "input": [{"role": "user", "content": "What is the capital of France?"}]}),
    )
    .await;
    let kinds = kinds(&events);
    assert_eq!(
        kinds.get(..4).unwrap(),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert!(!deltas.is_empty());
    let tail = kinds.get(kinds.len() - 4..).unwrap();
    assert_eq!(
        tail.get(..3).unwrap(),
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done"
        ]
    );
    let last = events.last().unwrap();
    assert!(
        ["response.completed", "response.incomplete"].contains(&tail[3]),
        "{tail:?}"
    );
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], index as u64);
    }
    let text = deltas.concat();
    assert_eq!(events[events.len() - 4]["text"], text.as_str());
    assert_eq!(last["response"]["model"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(last["response"]["temperature"], 0.0);
    let usage = &last["response"]["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 5);
    assert!(usage["output_tokens"].as_u64().unwrap() >= deltas.len() as u64 / 2);
}

#[tokio::test]
async fn the_token_limit_ends_the_answer_incomplete() {
    let url = start().await;
    let events = events(
        &url,
        json!({"model": "m", "stream": true, "max_output_tokens": 4,
               "instructions": "Answer at length.", "input": "Tell me about the sea."}),
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["usage"]["output_tokens"], 4);
    assert_eq!(last["response"]["instructions"], "Answer at length.");
}

#[tokio::test]
async fn requests_that_do_not_stream_get_a_clear_400() {
    let url = start().await;
    let client = reqwest::Client::new();
    for body in [
        json!({"model": "m", "input": "hi"}),
        json!({"model": "m", "stream": false, "input": "hi"}),
        json!({"model": "m", "stream": true, "input": 5}),
        json!({"model": "m", "stream": true, "input": "hi", "temperature": "hot"}),
        json!({"model": "m", "stream": true, "input": [{"role": "assistant", "content": "x"}]}),
    ] {
        let response = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"].as_str().unwrap().len() > 10,
            "{error}"
        );
    }
    let response = client
        .post(&url)
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await
        .unwrap();
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'stream' to true"));
}

#[tokio::test]
async fn a_long_answer_does_not_hold_up_other_requests() {
    let url = start().await;
    let client = reqwest::Client::new();
    let mut long = client
        .post(&url)
        .json(
            &json!({"model": "m", "stream": true, "temperature": 0, "max_output_tokens": 300,
                      "input": "Write a long story about a dragon."}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    long.chunk().await.unwrap().expect("the stream has begun");
    let asked = std::time::Instant::now();
    let response = client
        .post(&url)
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let took = asked.elapsed();
    assert!(took < std::time::Duration::from_millis(500), "{took:?}");
    drop(long); // the client leaves: the worker stops
}
