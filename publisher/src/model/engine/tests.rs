use std::time::{Duration, Instant};

use super::*;
use crate::model::{test_engine, Turn};

fn prompt(text: &str) -> Vec<u32> {
    test_engine()
        .model()
        .prompt(&[Turn::new("user", text)], 64)
        .unwrap()
}

/// The whole answer: its text and how it ended.
async fn answer(mut generated: UnboundedReceiver<Generated>) -> (String, Generated) {
    let mut text = String::new();
    while let Some(event) = generated.recv().await {
        match event {
            Generated::Text(piece) => text.push_str(&piece),
            end => return (text, end),
        }
    }
    panic!("the worker ended without a Done");
}

#[tokio::test]
async fn a_greedy_answer_is_stable_text_that_ends() {
    let engine = test_engine();
    let question = prompt("What is the capital of France?");
    let first = answer(engine.generate(question.clone(), 24, Sampling::GREEDY)).await;
    let second = answer(engine.generate(question, 24, Sampling::GREEDY)).await;
    assert_eq!(first, second, "greedy decoding is deterministic");
    let (text, end) = first;
    assert!(!text.trim().is_empty());
    assert!(!text.contains('\u{FFFD}'), "{text:?}");
    let Generated::Done { output_tokens, .. } = end else {
        panic!("{end:?}")
    };
    assert!((1..=24).contains(&output_tokens), "{output_tokens}");
}

#[tokio::test]
async fn the_token_limit_ends_an_answer_as_max_tokens() {
    let engine = test_engine();
    let (_, end) = answer(engine.generate(
        prompt("Write a long story about a dragon."),
        3,
        Sampling::GREEDY,
    ))
    .await;
    assert_eq!(
        end,
        Generated::Done {
            reason: StopReason::MaxTokens,
            output_tokens: 3
        }
    );
}

#[tokio::test]
async fn a_seed_makes_sampled_answers_reproducible() {
    let engine = test_engine();
    let sampling = Sampling {
        temperature: 0.9,
        top_p: 0.95,
        seed: 7,
    };
    let question = prompt("Name a colour.");
    let first = answer(engine.generate(question.clone(), 12, sampling)).await;
    let second = answer(engine.generate(question, 12, sampling)).await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn dropping_the_receiver_stops_generation_within_one_token() {
    // An engine of its own (sharing the loaded weights), so its counters see only this job.
    let engine = Engine::start(test_engine().model().clone(), 1).unwrap();
    let mut generated = engine.generate(
        prompt("Write a long story about a dragon."),
        400,
        Sampling::GREEDY,
    );
    let mut pieces = 0;
    while pieces < 5 {
        match generated.recv().await {
            Some(Generated::Text(_)) => pieces += 1,
            other => panic!("{other:?}"),
        }
    }
    drop(generated);
    let sampled_at_drop = engine.tokens_sampled();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.jobs_finished() == 0 {
        assert!(Instant::now() < deadline, "generation did not stop");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let after = engine.tokens_sampled() - sampled_at_drop;
    assert!(
        after <= 1,
        "{after} tokens were generated after the client left"
    );
    assert!(engine.tokens_sampled() < 100, "the answer ran on");
}

#[tokio::test]
async fn several_answers_at_once_all_finish() {
    let engine = test_engine();
    let jobs: Vec<_> = ["Say hi.", "Say yes.", "Say no."]
        .into_iter()
        .map(|text| engine.generate(prompt(text), 8, Sampling::GREEDY))
        .collect();
    for generated in jobs {
        let (_, end) = answer(generated).await;
        assert!(matches!(end, Generated::Done { .. }), "{end:?}");
    }
}
