//! Continuous batching and prefix reuse on the tiny fixtures of every family
//! (scripts/fixtures/tiny_models*.py): a batched step gives each sequence the logits it gets
//! alone, the scheduler's greedy outputs equal single-sequence generation whatever joins or
//! leaves the batch, and a prefix cache hit changes nothing but the work done.

mod common;

use mlx_models::config::ModelConfig;
use mlx_models::families::{self, BuildOptions};
use mlx_models::model::{CausalLm, FinishReason, GenerateParams};
use mlx_models::runtime::constraint::{TokenConstraint, TokenMask};
use mlx_models::runtime::engine::generate_tokens;
use mlx_models::runtime::scheduler::{
    Scheduler, SchedulerOptions, SequenceEvent, SequenceId, SequenceRequest, SequenceSummary,
};
use mlx_models::weights::Weights;
use mlx_rs::io::safetensors::load_safetensors;
use mlx_rs::{Array, Dtype};
use std::collections::HashMap;

/// The families' fixtures: plain, sliding window + softcaps, MoE + KV sharing + per-layer
/// inputs, 4-bit.
const FIXTURES: &[&str] = &[
    "llama",
    "qwen3",
    "gemma3_text",
    "mistral",
    "gemma4_e2b",
    "gemma4_moe",
    "llama_q4",
];

fn fixture_model(name: &str) -> Box<dyn CausalLm> {
    let dir = common::fixture(&format!("tiny/{name}"));
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let (tensors, _) = load_safetensors(dir.join("model.safetensors")).unwrap();
    let weights = families::sanitize(&config, Weights::from_map(tensors)).unwrap();
    let options = BuildOptions {
        huge_pages: false,
        dtype: Dtype::Float32,
        quantization: config
            .quantization()
            .unwrap()
            .map(|q| families::rename_quantization(&config, q).unwrap()),
    };
    Box::new(families::build_decoder(&config, weights, &options).unwrap())
}

/// Prompts of different lengths (ids within every fixture's vocabulary).
fn prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            (0..3 + 5 * i)
                .map(|j| ((i * 31 + j * 7) % 90 + 3) as u32)
                .collect()
        })
        .collect()
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        ..GenerateParams::default()
    }
}

/// What `model` generates for `prompt` alone (the single-sequence loop).
fn alone(model: &dyn CausalLm, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut out = Vec::new();
    generate_tokens(model, prompt, &greedy(max_tokens), &[], 4096, 4, &mut |t| {
        out.push(t);
        Ok(true)
    })
    .unwrap();
    out
}

/// Runs the scheduler until idle; returns each sequence's tokens and summary.
fn run(scheduler: &mut Scheduler) -> HashMap<SequenceId, (Vec<u32>, SequenceSummary)> {
    let mut tokens: HashMap<SequenceId, Vec<u32>> = HashMap::new();
    let mut done = HashMap::new();
    let mut steps = 0;
    while !scheduler.is_idle() {
        for (id, event) in scheduler.step().unwrap() {
            match event {
                SequenceEvent::Token(t) => tokens.entry(id).or_default().push(t.id),
                SequenceEvent::Finished(s) => {
                    done.insert(id, (tokens.remove(&id).unwrap_or_default(), s));
                }
                SequenceEvent::Failed(e) => panic!("sequence {id} failed: {e}"),
            }
        }
        steps += 1;
        assert!(steps < 10_000, "the scheduler does not finish");
    }
    done
}

#[test]
fn a_batched_step_gives_each_sequence_its_own_logits() {
    for name in FIXTURES {
        let model = fixture_model(name);
        let prompts = prompts(3);
        // Each sequence at its own position: prefill all but the last token alone.
        let mut caches: Vec<_> = prompts
            .iter()
            .map(|p| {
                let mut cache = model.new_cache();
                let ids: Vec<i32> = p[..p.len() - 1].iter().map(|&t| t as i32).collect();
                let input = Array::from_slice(&ids, &[1, ids.len() as i32]).unwrap();
                model.forward(&input, &mut cache).unwrap();
                cache
            })
            .collect();
        let mut singles = caches.clone();
        let last: Vec<u32> = prompts.iter().map(|p| *p.last().unwrap()).collect();
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let batched = model.forward_batch(&last, &mut refs).unwrap();
        assert_eq!(batched.shape()[..2], [3, 1], "{name}");
        for (b, cache) in singles.iter_mut().enumerate() {
            let input = Array::from_slice(&[last[b] as i32], &[1, 1]).unwrap();
            let want = model
                .forward(&input, cache)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let got = batched
                .slice(mlx_rs::s![b as i32..b as i32 + 1])
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{name}: sequence {b} differs by {worst}");
        }
        // The caches advanced by one position each, from their own offsets.
        for (c, p) in caches.iter().zip(&prompts) {
            assert_eq!(c.offset() as usize, p.len(), "{name}");
        }
    }
}

#[test]
fn batched_greedy_outputs_equal_each_request_alone() {
    for name in FIXTURES {
        let model = fixture_model(name);
        let prompts = prompts(6);
        let max_tokens = [9, 4, 12, 1, 7, 10];
        let want: Vec<Vec<u32>> = prompts
            .iter()
            .zip(max_tokens)
            .map(|(p, n)| alone(model.as_ref(), p, n))
            .collect();
        // A batch of at most 3: later requests join as earlier ones leave; a prefill chunk
        // of 4 spreads the longer prompts over several steps.
        let options = SchedulerOptions {
            max_batch: 3,
            prefill_chunk: 4,
            prefix_cache_bytes: 0,
            ..SchedulerOptions::default()
        };
        let mut scheduler = Scheduler::new(model, vec![], 4096, options);
        for (i, (p, n)) in prompts.iter().zip(max_tokens).enumerate() {
            scheduler
                .submit(i as u64, SequenceRequest::new(p.clone(), greedy(n)))
                .unwrap();
        }
        let got = run(&mut scheduler);
        for (i, want) in want.iter().enumerate() {
            let (tokens, summary) = &got[&(i as u64)];
            assert_eq!(tokens, want, "{name}: request {i}");
            assert_eq!(summary.finish_reason, FinishReason::Length);
            assert_eq!(summary.prompt_tokens, prompts[i].len());
        }
        let stats = scheduler.stats();
        let prompt_total: usize = prompts.iter().map(|p| p.len() - 1).sum();
        assert_eq!(stats.prefilled_tokens as usize, prompt_total, "{name}");
        assert_eq!(
            stats.generated_tokens as usize,
            max_tokens.iter().sum::<usize>()
        );
    }
}

#[test]
fn a_prefix_hit_prefills_only_the_new_tokens_and_changes_nothing() {
    for name in ["llama", "gemma3_text", "gemma4_e2b"] {
        let options = SchedulerOptions {
            prefill_chunk: 8,
            ..SchedulerOptions::default()
        };
        let first: Vec<u32> = (0..20).map(|i| (i * 13 % 80 + 2) as u32).collect();
        let mut scheduler = Scheduler::new(fixture_model(name), vec![], 4096, options);
        scheduler
            .submit(1, SequenceRequest::new(first.clone(), greedy(6)))
            .unwrap();
        let (reply, _) = run(&mut scheduler).remove(&1).unwrap();
        // The next turn: the first prompt, the reply, then new tokens.
        let mut second = first.clone();
        second.extend(&reply);
        second.extend([5, 6, 7, 8]);
        let before = scheduler.stats().prefilled_tokens;
        scheduler
            .submit(2, SequenceRequest::new(second.clone(), greedy(8)))
            .unwrap();
        let (warm, summary) = run(&mut scheduler).remove(&2).unwrap();
        // The cache holds the prompt and all but the last reply token (never fed back).
        let cached = first.len() + reply.len() - 1;
        assert_eq!(summary.cached_tokens, cached, "{name}");
        let prefilled = scheduler.stats().prefilled_tokens - before;
        assert_eq!(prefilled as usize, second.len() - 1 - cached, "{name}");
        let cold = alone(fixture_model(name).as_ref(), &second, 8);
        assert_eq!(warm, cold, "{name}");
        let stats = scheduler.stats().prefix_cache;
        assert_eq!((stats.lookups, stats.hits), (2, 1), "{name}");
    }
}

#[test]
fn ignore_eos_generates_through_the_end_of_sequence_tokens() {
    let prompt = prompts(1).remove(0);
    let first = alone(fixture_model("llama").as_ref(), &prompt, 1)[0];
    // The model's first greedy token is made an end-of-sequence id.
    let mut scheduler = Scheduler::new(
        fixture_model("llama"),
        vec![first],
        4096,
        SchedulerOptions::default(),
    );
    scheduler
        .submit(1, SequenceRequest::new(prompt.clone(), greedy(4)))
        .unwrap();
    let mut through = SequenceRequest::new(prompt.clone(), greedy(4));
    through.ignore_eos = true;
    scheduler.submit(2, through).unwrap();
    let mut done = run(&mut scheduler);
    let (tokens, summary) = done.remove(&1).unwrap();
    assert!(tokens.is_empty());
    assert_eq!(summary.finish_reason, FinishReason::Stop);
    let (tokens, summary) = done.remove(&2).unwrap();
    assert_eq!(tokens, alone(fixture_model("llama").as_ref(), &prompt, 4));
    assert_eq!(tokens[0], first);
    assert_eq!(summary.finish_reason, FinishReason::Length);
}

#[test]
fn a_cancelled_request_leaves_the_batch_at_once() {
    let mut scheduler = Scheduler::new(
        fixture_model("llama"),
        vec![],
        4096,
        SchedulerOptions::default(),
    );
    for (i, p) in prompts(2).into_iter().enumerate() {
        scheduler
            .submit(i as u64, SequenceRequest::new(p, greedy(50)))
            .unwrap();
    }
    for _ in 0..4 {
        scheduler.step().unwrap();
    }
    assert_eq!(scheduler.stats().running, 2);
    assert!(scheduler.cancel(0));
    assert!(!scheduler.cancel(0));
    assert_eq!(scheduler.stats().running, 1);
    let done = run(&mut scheduler);
    assert_eq!(done.keys().copied().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn a_stopped_request_finishes_and_its_state_serves_the_next_turn() {
    let mut scheduler = Scheduler::new(
        fixture_model("llama"),
        vec![],
        4096,
        SchedulerOptions::default(),
    );
    let first: Vec<u32> = (0..12).map(|i| (i * 11 % 80 + 2) as u32).collect();
    scheduler
        .submit(1, SequenceRequest::new(first.clone(), greedy(50)))
        .unwrap();
    let mut reply = Vec::new();
    while reply.len() < 5 {
        for (_, event) in scheduler.step().unwrap() {
            if let SequenceEvent::Token(t) = event {
                reply.push(t.id);
            }
        }
    }
    let summary = scheduler.stop(1).unwrap();
    assert_eq!(summary.finish_reason, FinishReason::Callback);
    assert_eq!((summary.prompt_tokens, summary.generated_tokens), (12, 5));
    assert!(scheduler.is_idle());
    assert_eq!(scheduler.stop(1), None);
    // The prompt and every reply token fed back (all but the last) are reusable.
    let mut second = first.clone();
    second.extend(&reply);
    second.extend([5, 6, 7]);
    scheduler
        .submit(2, SequenceRequest::new(second, greedy(2)))
        .unwrap();
    let (_, summary) = run(&mut scheduler).remove(&2).unwrap();
    assert_eq!(summary.cached_tokens, first.len() + reply.len() - 1);
}

#[test]
fn bad_requests_are_refused_before_they_queue() {
    let options = SchedulerOptions {
        max_waiting: 1,
        ..SchedulerOptions::default()
    };
    let mut scheduler = Scheduler::new(fixture_model("llama"), vec![], 32, options);
    let err = |r: mlx_models::Result<()>| r.unwrap_err().to_string();
    assert!(err(scheduler.submit(1, SequenceRequest::new(vec![], greedy(4)))).contains("empty"));
    assert!(
        err(scheduler.submit(1, SequenceRequest::new(vec![1; 30], greedy(4))))
            .contains("context length 32")
    );
    assert!(
        err(scheduler.submit(1, SequenceRequest::new(vec![1_000_000], greedy(4))))
            .contains("outside the vocabulary")
    );
    scheduler
        .submit(1, SequenceRequest::new(vec![1, 2], greedy(4)))
        .unwrap();
    assert!(err(scheduler.submit(1, SequenceRequest::new(vec![1, 2], greedy(4)))).contains("busy"));
    assert!(!scheduler.is_idle() && scheduler.stats().waiting == 1);
}

/// Allows only tokens below 10, and finishes after three of them.
#[derive(Debug, Default)]
struct SmallTokens {
    seen: Vec<u32>,
}

impl TokenConstraint for SmallTokens {
    fn mask(&mut self) -> mlx_models::Result<Option<TokenMask>> {
        Ok(Some(TokenMask::from_words(vec![(1 << 10) - 1])))
    }
    fn consume(&mut self, token: u32) -> mlx_models::Result<()> {
        self.seen.push(token);
        Ok(())
    }
    fn is_finished(&self) -> bool {
        self.seen.len() == 3
    }
}

#[test]
fn a_constraint_masks_every_draw_and_ends_the_sequence() {
    let model = fixture_model("qwen3");
    let prompt = prompts(1).remove(0);
    // The unconstrained greedy continuation, for contrast, and the logits of its first step.
    let free = alone(model.as_ref(), &prompt, 3);
    let mut cache = model.new_cache();
    let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
    let logits = model
        .forward(
            &Array::from_slice(&ids, &[1, ids.len() as i32]).unwrap(),
            &mut cache,
        )
        .unwrap()
        .slice(mlx_rs::s![.., -1, ..])
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let mut scheduler = Scheduler::new(model, vec![], 4096, SchedulerOptions::default());
    let mut request = SequenceRequest::new(prompt, greedy(20));
    request.constraint = Some(Box::new(SmallTokens::default()));
    request.logprobs = Some(2);
    scheduler.submit(7, request).unwrap();
    let mut events = Vec::new();
    while !scheduler.is_idle() {
        events.extend(scheduler.step().unwrap());
    }
    let tokens: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            SequenceEvent::Token(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 3);
    assert!(tokens.iter().all(|t| t.id < 10));
    assert!(
        free.iter().any(|&t| t >= 10),
        "the fixture must want other tokens"
    );
    // The first token: the argmax of the logits among 0..10, with its log-probability under
    // the masked distribution (computed here in f64).
    let allowed = &logits[..10];
    let best = (0..10)
        .max_by(|&a, &b| allowed[a].total_cmp(&allowed[b]))
        .unwrap();
    let lse = allowed
        .iter()
        .map(|&l| (l as f64 - allowed[best] as f64).exp())
        .sum::<f64>()
        .ln()
        + allowed[best] as f64;
    assert_eq!(tokens[0].id, best as u32);
    let lp = tokens[0].logprob.unwrap() as f64;
    assert!((lp - (allowed[best] as f64 - lse)).abs() < 1e-4, "{lp}");
    assert_eq!(tokens[0].top_logprobs.len(), 2);
    assert_eq!(tokens[0].top_logprobs[0].0, best as u32);
    assert!(matches!(
        events.last(),
        Some((7, SequenceEvent::Finished(s))) if s.finish_reason == FinishReason::Stop
    ));
}

/// The repetition penalty sees the same recent tokens in the scheduler as in the
/// single-sequence loop (the prompt's tail, then the tokens generated), batched or not.
#[test]
fn the_repetition_penalty_sees_the_same_tokens_batched_and_alone() {
    let params = GenerateParams {
        max_tokens: 12,
        sampling: mlx_models::runtime::sample::SamplingParams {
            repetition_penalty: 1.8,
            repetition_context_size: 6,
            ..Default::default()
        },
        ..GenerateParams::default()
    };
    let model = fixture_model("llama");
    let prompts = prompts(3);
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut out = Vec::new();
            generate_tokens(model.as_ref(), p, &params, &[], 4096, 4, &mut |t| {
                out.push(t);
                Ok(true)
            })
            .unwrap();
            out
        })
        .collect();
    let mut scheduler = Scheduler::new(model, vec![], 4096, SchedulerOptions::default());
    for (i, p) in prompts.iter().enumerate() {
        scheduler
            .submit(i as u64, SequenceRequest::new(p.clone(), params.clone()))
            .unwrap();
    }
    let got = run(&mut scheduler);
    for (i, want) in want.iter().enumerate() {
        assert_eq!(&got[&(i as u64)].0, want, "request {i}");
    }
    // The penalty changed something: without it the first request decodes otherwise.
    assert_ne!(
        alone(fixture_model("llama").as_ref(), &prompts[0], 12),
        want[0]
    );
}
