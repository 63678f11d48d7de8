//! A [`Repository`] that fails on demand: for the tests of what real parts cannot be made to do
//! at a chosen moment — the 40th `put` refused, the connection gone after 100 puts — wrapped
//! around a real one, so that everything else is still real borg.

use std::sync::Mutex;

use crate::format::envelope::ObjectId;

use super::repository::{RepoError, RepoFuture, Repository, SharedRepository};
use super::rpc::RpcError;

/// The repository methods, to name the one a fault is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    List,
    Put,
    Delete,
    Commit,
    Rollback,
    GetFreeNonce,
    CommitNonceReservation,
    LoadKey,
    BreakLock,
    SaveKey,
    Check,
}

/// When to fail. Counts start at 1 and include the failing call.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultPlan {
    /// The `n`th call of this method fails with [`RepoError::Other`] (class `InjectedFault`);
    /// the calls before and after it are passed on.
    pub fail_call: Option<(Method, u64)>,
    /// After this many puts have been passed on, the connection is gone: the wrapped repository
    /// is told there will be no more requests (a `borg serve` then rolls back and exits), and
    /// every later call fails as a lost connection does.
    pub disconnect_after_puts: Option<u64>,
}

pub struct FaultyRepository {
    inner: SharedRepository,
    plan: FaultPlan,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    calls: Vec<(Method, u64)>,
    puts: u64,
    disconnected: bool,
}

/// What [`FaultyRepository::enter`] decided for one call.
enum Verdict {
    PassOn,
    Fail(RepoError),
    /// Pass on this put, then disconnect.
    PassOnThenDisconnect,
}

impl FaultyRepository {
    pub fn new(inner: SharedRepository, plan: FaultPlan) -> FaultyRepository {
        FaultyRepository {
            inner,
            plan,
            state: Mutex::new(State::default()),
        }
    }

    fn enter(&self, method: Method) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.disconnected {
            return Verdict::Fail(RepoError::Rpc(RpcError::ConnectionLost(
                "injected: the connection was dropped".into(),
            )));
        }
        let count = match state.calls.iter_mut().find(|(m, _)| *m == method) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                state.calls.push((method, 1));
                1
            }
        };
        if self.plan.fail_call == Some((method, count)) {
            return Verdict::Fail(RepoError::Other {
                class: "InjectedFault".into(),
                message: format!("call {count} of {method:?} failed on purpose"),
            });
        }
        if method == Method::Put {
            state.puts += 1;
            if Some(state.puts) == self.plan.disconnect_after_puts {
                state.disconnected = true;
                return Verdict::PassOnThenDisconnect;
            }
        }
        Verdict::PassOn
    }

    /// Runs `call` on the wrapped repository unless the plan says this call fails.
    fn guarded<'a, T: Send + 'a>(
        &'a self,
        method: Method,
        call: impl FnOnce(&'a dyn Repository) -> RepoFuture<'a, T> + Send + 'a,
    ) -> RepoFuture<'a, T> {
        let verdict = self.enter(method);
        Box::pin(async move {
            match verdict {
                Verdict::Fail(e) => Err(e),
                Verdict::PassOn => call(self.inner.as_ref()).await,
                Verdict::PassOnThenDisconnect => {
                    let answer = call(self.inner.as_ref()).await;
                    let _ = self.inner.end_requests().await;
                    answer
                }
            }
        })
    }
}

impl Repository for FaultyRepository {
    fn id(&self) -> &ObjectId {
        self.inner.id()
    }

    fn get<'a>(&'a self, id: &'a ObjectId) -> RepoFuture<'a, Vec<u8>> {
        self.guarded(Method::Get, move |r| r.get(id))
    }

    fn list<'a>(
        &'a self,
        limit: usize,
        marker: Option<&'a ObjectId>,
    ) -> RepoFuture<'a, Vec<ObjectId>> {
        self.guarded(Method::List, move |r| r.list(limit, marker))
    }

    fn put<'a>(&'a self, id: &'a ObjectId, data: Vec<u8>) -> RepoFuture<'a, ()> {
        self.guarded(Method::Put, move |r| r.put(id, data))
    }

    fn delete<'a>(&'a self, id: &'a ObjectId) -> RepoFuture<'a, ()> {
        self.guarded(Method::Delete, move |r| r.delete(id))
    }

    fn commit(&self, compact: bool) -> RepoFuture<'_, ()> {
        self.guarded(Method::Commit, move |r| r.commit(compact))
    }

    fn commit_compacting(&self, threshold: f64) -> RepoFuture<'_, ()> {
        self.guarded(Method::Commit, move |r| r.commit_compacting(threshold))
    }

    fn check(&self, max_duration: Option<u64>) -> RepoFuture<'_, bool> {
        self.guarded(Method::Check, move |r| r.check(max_duration))
    }

    fn rollback(&self) -> RepoFuture<'_, ()> {
        self.guarded(Method::Rollback, |r| r.rollback())
    }

    fn get_free_nonce(&self) -> RepoFuture<'_, Option<u64>> {
        self.guarded(Method::GetFreeNonce, |r| r.get_free_nonce())
    }

    fn commit_nonce_reservation(
        &self,
        next_unreserved: u64,
        start_nonce: Option<u64>,
    ) -> RepoFuture<'_, ()> {
        self.guarded(Method::CommitNonceReservation, move |r| {
            r.commit_nonce_reservation(next_unreserved, start_nonce)
        })
    }

    fn load_key(&self) -> RepoFuture<'_, Option<String>> {
        self.guarded(Method::LoadKey, |r| r.load_key())
    }

    fn save_key<'a>(&'a self, text: &'a str) -> RepoFuture<'a, ()> {
        self.guarded(Method::SaveKey, move |r| r.save_key(text))
    }

    fn break_lock(&self) -> RepoFuture<'_, ()> {
        self.guarded(Method::BreakLock, |r| r.break_lock())
    }

    /// Always passed on (once the plan disconnected, again: harmless), so that a test's
    /// session ends as cleanly as the wrapped repository allows.
    fn end_requests(&self) -> RepoFuture<'_, ()> {
        self.inner.end_requests()
    }
}
