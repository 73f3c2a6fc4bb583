//! The demo's generated users and the uploads their mini program would send.
//!
//! Each user has a formId kind (several usable formIds, one, only expired ones, none) and,
//! independently, answers to the subscribe prompt for [`SUB_TEMPLATE`] (accepted once,
//! accepted twice, declined, never asked). Their formIds are issued by the fake WeChat and
//! their consents granted in it, so WeChat accepts exactly what the uploads carry. The uploads
//! mirror a real client's: formIds in one or two uploads (some as a JSON string, as the
//! seed's client sends them, a few sent twice), and each answer of `wx.requestSubscribeMessage`
//! as a `subscriptions` object, beside formIds or alone.
//!
//! This module owns the generation and what ingest should make of it (formIds stored,
//! consents stored, uploads dead-lettered), and reads back what the bank and WeChat hold.
//! It must not publish anything.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use serde_json::{json, Value};
use wxpush_domain::{AppId, OpenId};
use wxpush_fake_wechat::{FakeHandle, FakeWeChat};
use wxpush_redis::Conn;
use wxpush_roles::Deps;

use super::{random_u64, unix_ms, Rng, OTHER_SUB_TEMPLATE, SUB_TEMPLATE};

/// Which formIds a user uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// 2 to 5 usable formIds.
    Several,
    /// One usable formId.
    One,
    /// Only formIds that have expired: ingest drops them.
    Expired,
    /// Never uploaded a formId.
    Nothing,
}

/// How a user answered the subscribe prompt for [`SUB_TEMPLATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Accepted once: one consent.
    Once,
    /// Accepted on two occasions: two consents.
    Twice,
    /// Declined (`reject`): no consent.
    Declined,
    /// Never asked.
    NeverAsked,
}

impl Answer {
    /// Consents the user granted.
    pub(super) fn accepted(self) -> u64 {
        match self {
            Answer::Once => 1,
            Answer::Twice => 2,
            Answer::Declined | Answer::NeverAsked => 0,
        }
    }
}

pub(super) struct DemoUser {
    pub open_id: String,
    pub kind: Kind,
    pub answer: Answer,
    /// Holds a usable formId once ingest is done.
    pub reachable: bool,
}

/// One upload before it is encoded.
struct Draft {
    form_ids: Option<Vec<Value>>,
    subscriptions: Option<Value>,
}

pub(super) struct Population {
    pub users: Vec<DemoUser>,
    pub uploads: Vec<Vec<u8>>,
    pub form_ids_uploaded: usize,
    /// formIds uploaded a second time (a client re-sending an old upload): stored once.
    pub resent: usize,
    /// Uploads carrying `formIds` as a JSON string (as the seed's client sends them).
    pub as_string: usize,
    /// Uploads carrying a `subscriptions` object, and those of them without formIds.
    pub with_subscriptions: usize,
    pub subscriptions_only: usize,
    /// Uploads without a usable entry (only expired formIds, no consent): ingest
    /// dead-letters them (`no_usable_entry`).
    pub unusable_uploads: usize,
    /// Uploads holding only a declined subscribe answer: ingest keeps nothing of them, and
    /// does not count them as poison.
    pub declined_only: usize,
    /// formIds the bank should hold once ingest is done.
    pub expected_stored: u64,
    /// Consents for [`SUB_TEMPLATE`] the bank (and WeChat) should hold once ingest is done.
    pub expected_consents: u64,
}

/// A user's formIds as upload entries, issued by the fake WeChat: 2 to 5 (or one) with
/// between 1 hour and 6 days left, or 1 to 3 that expired hours to days ago, or none.
fn form_ids(
    rng: &mut Rng,
    fake: &FakeHandle,
    app: &AppId,
    open_id: &str,
    kind: Kind,
) -> anyhow::Result<Vec<Value>> {
    let now = unix_ms();
    let issue = |ttl: Duration| -> anyhow::Result<String> {
        fake.issue_form_ids(Some(app.as_str()), open_id, 1, Some(ttl))
            .map_err(|e| anyhow!("fake WeChat: {e}"))?
            .pop()
            .ok_or_else(|| anyhow!("fake WeChat issued no formId"))
    };
    let mut entries = Vec::new();
    match kind {
        Kind::Several | Kind::One => {
            let n = if kind == Kind::One {
                1
            } else {
                2 + rng.below(4)
            };
            for _ in 0..n {
                let ttl = Duration::from_secs(3600 + rng.below(5 * 24 * 3600));
                let id = issue(ttl)?;
                // Some clients send no expiry: the server assumes 7 days.
                if rng.below(4) == 0 {
                    entries.push(json!({ "formId": id }));
                } else {
                    entries.push(json!({
                        "formId": id,
                        "expire": now + ttl.as_millis() as i64,
                    }));
                }
            }
        }
        Kind::Expired => {
            for _ in 0..1 + rng.below(3) {
                let id = issue(Duration::ZERO)?;
                let ago = 3_600_000 + rng.below(3 * 86_400_000) as i64;
                entries.push(json!({ "formId": id, "expire": now - ago }));
            }
        }
        Kind::Nothing => {}
    }
    Ok(entries)
}

/// The user's uploads: the formId batches, each answer of `wx.requestSubscribeMessage` (one
/// object per prompt) riding along with a batch that has none yet (7 times in 8), else alone.
fn with_answers(rng: &mut Rng, batches: Vec<Vec<Value>>, answer: Answer) -> Vec<Draft> {
    let mut drafts: Vec<Draft> = batches
        .into_iter()
        .map(|b| Draft {
            form_ids: Some(b),
            subscriptions: None,
        })
        .collect();
    let answers: &[&str] = match answer {
        Answer::Once => &["accept"],
        Answer::Twice => &["accept", "accept"],
        Answer::Declined => &["reject"],
        Answer::NeverAsked => &[],
    };
    for said in answers {
        let mut subs = json!({"errMsg": "requestSubscribeMessage:ok", SUB_TEMPLATE: said});
        // Sometimes asked for two templates at once, declining the other one.
        if rng.below(3) == 0 {
            subs[OTHER_SUB_TEMPLATE] = json!("reject");
        }
        match drafts.iter_mut().find(|d| d.subscriptions.is_none()) {
            Some(d) if rng.below(8) != 0 => d.subscriptions = Some(subs),
            _ => drafts.push(Draft {
                form_ids: None,
                subscriptions: Some(subs),
            }),
        }
    }
    drafts
}

impl Population {
    /// Generates `users` users for `app`, issuing their formIds and granting their consents
    /// in the fake WeChat.
    pub(super) fn generate(fake: &FakeHandle, app: &AppId, users: usize) -> anyhow::Result<Self> {
        let mut rng = Rng(random_u64() | 1);
        let run = rng.next() & 0xffff_ffff_ffff;
        let mut p = Population {
            users: Vec::with_capacity(users),
            uploads: Vec::new(),
            form_ids_uploaded: 0,
            resent: 0,
            as_string: 0,
            with_subscriptions: 0,
            subscriptions_only: 0,
            unusable_uploads: 0,
            declined_only: 0,
            expected_stored: 0,
            expected_consents: 0,
        };
        for i in 0..users {
            // 28 characters, like a real openId.
            let open_id = format!(
                "oDmo{i:08}{:016x}",
                run.wrapping_mul(0x9e37_79b9) ^ i as u64
            );
            let kind = match rng.below(100) {
                0..=49 => Kind::Several,
                50..=74 => Kind::One,
                75..=89 => Kind::Expired,
                _ => Kind::Nothing,
            };
            let answer = match rng.below(100) {
                0..=59 => Answer::Once,
                60..=79 => Answer::Twice,
                80..=89 => Answer::Declined,
                _ => Answer::NeverAsked,
            };
            let entries = form_ids(&mut rng, fake, app, &open_id, kind)?;
            if matches!(kind, Kind::Several | Kind::One) {
                p.expected_stored += entries.len() as u64;
            }
            p.form_ids_uploaded += entries.len();
            let batches = p.batches(&mut rng, entries, answer);
            let drafts = with_answers(&mut rng, batches, answer);
            let accepted = answer.accepted();
            if accepted > 0 {
                fake.grant_consents(Some(app.as_str()), &open_id, SUB_TEMPLATE, accepted as u32)
                    .map_err(|e| anyhow!("fake WeChat: {e}"))?;
                p.expected_consents += accepted;
            }
            let user = DemoUser {
                open_id,
                kind,
                answer,
                reachable: matches!(kind, Kind::Several | Kind::One),
            };
            for d in drafts {
                p.encode(&mut rng, &user, d)?;
            }
            p.users.push(user);
        }
        Ok(p)
    }

    /// Splits a user's formIds into the uploads that carry them. Several formIds often come
    /// in two uploads (always for a user asked to subscribe twice: each prompt came with a
    /// form); now and then the second repeats a formId of the first (a client re-sending).
    fn batches(
        &mut self,
        rng: &mut Rng,
        mut entries: Vec<Value>,
        answer: Answer,
    ) -> Vec<Vec<Value>> {
        let twice = answer == Answer::Twice;
        let split = entries.len() >= 3 || (entries.len() == 2 && twice);
        let mut batches = if split && (twice || rng.below(2) == 0) {
            let second = entries.split_off(entries.len() / 2);
            vec![entries, second]
        } else if entries.is_empty() {
            vec![]
        } else {
            vec![entries]
        };
        if batches.len() == 2 && rng.below(5) == 0 {
            let again = batches[0][0].clone();
            batches[1].push(again);
            self.resent += 1;
            self.form_ids_uploaded += 1;
        }
        batches
    }

    /// Encodes one upload of `user` and counts what ingest should make of it.
    fn encode(&mut self, rng: &mut Rng, user: &DemoUser, d: Draft) -> anyhow::Result<()> {
        let mut upload = json!({ "openId": user.open_id });
        let has_form_ids = d.form_ids.is_some();
        let accepts = d
            .subscriptions
            .as_ref()
            .is_some_and(|s| s[SUB_TEMPLATE] == "accept");
        if let Some(batch) = d.form_ids {
            upload["formIds"] = if rng.below(3) == 0 {
                self.as_string += 1;
                Value::String(serde_json::to_string(&batch)?)
            } else {
                Value::Array(batch)
            };
        }
        if let Some(subs) = d.subscriptions {
            self.with_subscriptions += 1;
            if !has_form_ids {
                self.subscriptions_only += 1;
            }
            upload["subscriptions"] = subs;
        }
        // Ingest dead-letters an upload without a usable entry (here: expired formIds and no
        // consent); one holding only a declined answer is well-formed with nothing to keep,
        // not poison.
        if has_form_ids && !user.reachable && !accepts {
            self.unusable_uploads += 1;
        }
        if !has_form_ids && !accepts {
            self.declined_only += 1;
        }
        self.uploads.push(serde_json::to_vec(&upload)?);
        Ok(())
    }

    pub(super) fn count(&self, kind: Kind) -> usize {
        self.users.iter().filter(|u| u.kind == kind).count()
    }

    pub(super) fn answered(&self, answer: Answer) -> usize {
        self.users.iter().filter(|u| u.answer == answer).count()
    }

    /// Users holding a usable formId.
    pub(super) fn reachable(&self) -> usize {
        self.users.iter().filter(|u| u.reachable).count()
    }

    /// Users holding a consent for [`SUB_TEMPLATE`].
    pub(super) fn consenting(&self) -> usize {
        self.users
            .iter()
            .filter(|u| u.answer.accepted() > 0)
            .count()
    }

    /// formIds the bank holds now for the demo's users: one ZCARD per user, 64 at a time (not
    /// one pipeline: each user's keys have a hash slot of their own, and a Redis Cluster
    /// refuses a pipeline across slots, which stopped the demo there).
    pub(super) async fn stored(
        &self,
        deps: &Deps,
        app: &AppId,
        redis: &Conn,
    ) -> anyhow::Result<u64> {
        let counts: Vec<u64> = stream::iter(self.users.iter().filter(|u| u.reachable))
            .map(|u| async move {
                let open_id = OpenId::new(&u.open_id)?;
                let mut conn = redis.clone();
                redis::cmd("ZCARD")
                    .arg(deps.bank.keys().credentials(app, &open_id))
                    .query_async::<u64>(&mut conn)
                    .await
                    .context("Redis")
            })
            .buffered(64)
            .try_collect()
            .await?;
        Ok(counts.iter().sum())
    }

    /// Consents for [`SUB_TEMPLATE`] the bank holds now (its per-shard totals).
    pub(super) async fn consents_stored(&self, deps: &Deps, app: &AppId) -> anyhow::Result<u64> {
        deps.bank
            .consent_total(app, SUB_TEMPLATE)
            .await
            .context("Redis")
    }

    /// Each user's consents left for [`SUB_TEMPLATE`] in the bank
    /// (`Bank::consents_left`), in the order of [`Population::users`].
    pub(super) async fn bank_consents_left(
        &self,
        deps: &Deps,
        app: &AppId,
    ) -> anyhow::Result<Vec<u64>> {
        stream::iter(&self.users)
            .map(|u| async move {
                let open_id = OpenId::new(&u.open_id)?;
                deps.bank
                    .consents_left(app, &open_id, SUB_TEMPLATE)
                    .await
                    .context("Redis")
            })
            .buffered(64)
            .try_collect()
            .await
    }

    /// Each user's consents left for [`SUB_TEMPLATE`] in WeChat (the fake), in the order of
    /// [`Population::users`].
    pub(super) fn wechat_consents_left(
        &self,
        fake: &FakeWeChat,
        app: &AppId,
    ) -> anyhow::Result<Vec<u64>> {
        self.users
            .iter()
            .map(|u| {
                fake.consents_left(Some(app.as_str()), &u.open_id, SUB_TEMPLATE)
                    .map(u64::from)
                    .map_err(|e| anyhow!("fake WeChat: {e}"))
            })
            .collect()
    }
}
