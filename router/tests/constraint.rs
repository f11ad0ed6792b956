//! Constrained decoding through the scheduler: the mask reaches the runner each sampling step,
//! every chosen token is committed, a complete constraint stops the request, a failing one
//! aborts only its own request, and slot accounting stays exact throughout (checked after every
//! step by the test configuration).

mod common;

use common::*;
use router::{
    ConstraintError, ConstraintState, Req, Scheduler, StopConditions, Token, TokenConstraint,
    TokenMask,
};

/// Allows exactly the next token of `target`; done after the last one. Optionally fails on the
/// n-th call of `allowed` or `commit`.
#[derive(Debug, Clone)]
struct Spell {
    target: Vec<Token>,
    done: usize,
    fail_allowed_at: Option<usize>,
    fail_commit_at: Option<usize>,
    allowed_calls: usize,
}

impl Spell {
    fn new(target: &[Token]) -> Self {
        Spell {
            target: target.to_vec(),
            done: 0,
            fail_allowed_at: None,
            fail_commit_at: None,
            allowed_calls: 0,
        }
    }
}

impl TokenConstraint for Spell {
    fn allowed(&mut self) -> Result<TokenMask, ConstraintError> {
        self.allowed_calls += 1;
        if self.fail_allowed_at == Some(self.allowed_calls) {
            return Err(ConstraintError("mask failed".into()));
        }
        let mut m = TokenMask::empty(VOCAB as usize);
        m.allow(self.target[self.done]);
        Ok(m)
    }

    fn commit(&mut self, token: Token) -> Result<ConstraintState, ConstraintError> {
        if self.fail_commit_at == Some(self.done + 1) || token != self.target[self.done] {
            return Err(ConstraintError(format!("token {token} refused")));
        }
        self.done += 1;
        Ok(if self.done == self.target.len() {
            ConstraintState::Done
        } else {
            ConstraintState::Open
        })
    }

    fn boxed_clone(&self) -> Box<dyn TokenConstraint> {
        Box::new(self.clone())
    }
}

fn constrained(id: u64, prompt: Vec<Token>, spell: Spell) -> Req {
    req(id, prompt, 20).with_constraint(Box::new(spell))
}

#[test]
fn a_constrained_request_follows_its_mask_and_stops_when_complete_beside_free_ones() {
    for (page_size, chunk) in [(1, None), (4, Some(4))] {
        let mut cfg = config(page_size, 256);
        cfg.chunked_prefill_size = chunk;
        let mut s = Scheduler::new(cfg).unwrap();
        let target = [3, 1, 4, 1, 5];
        let prompt: Vec<Token> = (1..12).collect();
        s.add_request(constrained(1, prompt.clone(), Spell::new(&target)))
            .unwrap();
        s.add_request(req(2, prompt.clone(), 6)).unwrap();
        let mut runner = FakeRunner::default();
        let out = run_to_idle(&mut s, &mut runner, 200);
        assert_eq!(out[&1].tokens, target, "page size {page_size}");
        assert_eq!(out[&1].finish.as_deref(), Some("stop"));
        let free = StopConditions {
            max_new_tokens: 6,
            ignore_eos: true,
            ..StopConditions::default()
        };
        assert_eq!(out[&2].tokens, reference(&prompt, &free));
        s.check_invariants().unwrap();
    }
}

#[test]
fn length_ends_a_constrained_request_before_its_constraint_does() {
    let mut s = Scheduler::new(config(1, 64)).unwrap();
    s.add_request(req(1, vec![1, 2, 3], 2).with_constraint(Box::new(Spell::new(&[7, 8, 9]))))
        .unwrap();
    let out = run_to_idle(&mut s, &mut FakeRunner::default(), 50);
    assert_eq!(out[&1].tokens, [7, 8]);
    assert_eq!(out[&1].finish.as_deref(), Some("length"));
}

#[test]
fn a_failing_constraint_aborts_its_request_only_and_frees_its_slots() {
    // Fails at the first mask (prefill), at a later mask (decode), and at a commit.
    let spells = [
        Spell {
            fail_allowed_at: Some(1),
            ..Spell::new(&[2, 2, 2])
        },
        Spell {
            fail_allowed_at: Some(3),
            ..Spell::new(&[2, 2, 2])
        },
        Spell {
            fail_commit_at: Some(2),
            ..Spell::new(&[2, 2, 2])
        },
    ];
    let mut s = Scheduler::new(config(2, 128)).unwrap();
    for (i, spell) in spells.into_iter().enumerate() {
        s.add_request(constrained(i as u64 + 1, vec![1, 2, 3, 4], spell))
            .unwrap();
    }
    s.add_request(req(9, vec![1, 2, 3, 4], 5)).unwrap();
    let out = run_to_idle(&mut s, &mut FakeRunner::default(), 100);
    assert_eq!(out[&1].tokens, Vec::<Token>::new());
    assert_eq!(out[&2].tokens, [2, 2]);
    assert_eq!(out[&3].tokens, [2, 2]);
    for id in 1..=3 {
        assert_eq!(out[&id].finish.as_deref(), Some("abort"), "request {id}");
    }
    assert_eq!(out[&9].tokens.len(), 5);
    assert_eq!(out[&9].finish.as_deref(), Some("length"));
    let acc = s.check_invariants().unwrap();
    assert_eq!(acc.private, 0, "{acc:?}");
}

#[test]
fn a_retracted_constrained_request_resumes_where_its_constraint_stood() {
    // A pool too small for every request's output forces retractions mid-decode.
    let mut cfg = config(1, 48);
    cfg.max_running_requests = 4;
    cfg.schedule_conservativeness = 0.01;
    let mut s = Scheduler::new(cfg).unwrap();
    let target: Vec<Token> = (0..12).map(|i| (i * 5 % 14) as Token).collect();
    for id in 0..4u64 {
        let prompt: Vec<Token> = (0..8).map(|i| ((i + id) % 14) as Token).collect();
        s.add_request(constrained(id, prompt, Spell::new(&target)))
            .unwrap();
    }
    let out = run_to_idle(&mut s, &mut FakeRunner::default(), 500);
    for id in 0..4u64 {
        assert_eq!(out[&id].tokens, target, "request {id}");
    }
    assert!(s.counters().retractions > 0, "the test must retract");
}
