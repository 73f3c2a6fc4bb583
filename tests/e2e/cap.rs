//! The frequency cap (contract 8.5, issue 15 item 4): `max_campaign_messages_per_user_per_day`
//! per app, counted by the script that claims the credential, in the user's own hash slot.
//! End to end with separate processes: three campaigns to the same users with a cap of 2, the
//! third recorded `capped` and nothing spent; two campaigns racing for users with a cap of 1,
//! each user reached once; single messages counted only with `cap_single_messages`. And, on
//! the bank alone, what counts: a claim in flight counts, an outcome that cannot have reached
//! the user gives its place back, one that may have (sent, sent_unconfirmed, unknown) keeps it.

use std::time::Duration;

use serde_json::json;
use wxpush_bank::{CampaignClaim, ClaimExtras, ClaimMode, Settle};
use wxpush_domain::OpenId;
use wxpush_testkit::eventually;
use wxpush_testkit::fleet::{campaign, Fleet, TPL};

const CAP_VAR: &str = "WXPUSH_MAX_CAMPAIGN_MESSAGES_PER_USER_PER_DAY";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_third_campaign_of_the_day_is_capped_and_spends_nothing() {
    let mut f = Fleet::new("cap_three", 100_000, 50).await;
    f.env.set(CAP_VAR, "2");
    let users = f.users(0, 40, 3).await;
    f.start("dispatch");
    f.start("send");
    f.start("send");
    for id in ["cap-1", "cap-2"] {
        f.publish_campaign(campaign(id, json!({"all": true}))).await;
        f.wait_complete(id, Duration::from_secs(60)).await;
        assert_eq!(f.counts(id).await.get("sent"), Some(&40), "{id}");
    }
    f.publish_campaign(campaign("cap-3", json!({"all": true})))
        .await;
    f.wait_complete("cap-3", Duration::from_secs(60)).await;
    let c = f.counts("cap-3").await;
    assert_eq!(c.get("capped"), Some(&40), "{c:?}");
    assert_eq!(c.get("sent"), None, "{c:?}");
    // Two messages each, and the third formId still theirs.
    assert!(f.accepted_per_user().values().all(|&n| n == 2));
    assert_eq!(f.accepted_per_user().len(), 40);
    for who in &users {
        assert_eq!(f.usable(who).await, 1, "{who}'s last formId untouched");
    }
    let status = wxpush_testkit::run(&f.env, &["campaign", "status", "cap-3", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["capped"], 40, "{v}");
    assert_eq!(v["state"], "complete", "{v}");
    let human = wxpush_testkit::run(&f.env, &["campaign", "status", "cap-3"]);
    assert!(wxpush_testkit::stdout(&human).contains("capped"));
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_campaigns_racing_reach_each_user_once_under_a_cap_of_one() {
    let mut f = Fleet::new("cap_race", 100_000, 20).await;
    f.env.set(CAP_VAR, "1");
    let users = f.users(0, 200, 2).await;
    f.start("dispatch");
    f.start("dispatch");
    f.start("send");
    f.start("send");
    f.start("send");
    f.publish_campaign(campaign("race-a", json!({"all": true})))
        .await;
    f.publish_campaign(campaign("race-b", json!({"all": true})))
        .await;
    f.wait_complete("race-a", Duration::from_secs(90)).await;
    f.wait_complete("race-b", Duration::from_secs(90)).await;
    let (a, b) = (f.counts("race-a").await, f.counts("race-b").await);
    let get = |c: &std::collections::BTreeMap<String, u64>, k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(get(&a, "sent") + get(&b, "sent"), 200, "{a:?} {b:?}");
    assert_eq!(get(&a, "capped") + get(&b, "capped"), 200, "{a:?} {b:?}");
    let per_user = f.accepted_per_user();
    assert_eq!(per_user.len(), 200);
    assert!(per_user.values().all(|&n| n == 1), "one message each");
    for who in &users {
        assert_eq!(f.usable(who).await, 1);
    }
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_messages_count_only_where_the_app_says_so() {
    let mut f = Fleet::new("cap_singles", 100_000, 50).await;
    f.env.set(CAP_VAR, "1");
    let users = f.users(0, 10, 3).await;
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(campaign("c-1", json!({"all": true})))
        .await;
    f.wait_complete("c-1", Duration::from_secs(60)).await;
    let message = |id: String, who: &str| {
        json!({"messageId": id, "openId": who, "kind": "template", "templateId": TPL,
               "keywords": ["Order", "Tap to track it"]})
    };
    // Not counted (the default): sent although every user is at the cap.
    let first: Vec<_> = users.iter().map(|u| message(format!("a-{u}"), u)).collect();
    f.publish_messages(&first).await;
    let all_sent = eventually(Duration::from_secs(60), || async {
        f.accepted_per_user().values().all(|&n| n == 2) && f.accepted_per_user().len() == 10
    })
    .await;
    assert!(all_sent, "{:?}", f.accepted_per_user());
    f.stop_all();
    // Counted, with `WXPUSH_CAP_SINGLE_MESSAGES`: capped, and the status says so.
    f.start_with("send", &[("WXPUSH_CAP_SINGLE_MESSAGES", "1")]);
    f.publish_messages(&[message("b-0".into(), &users[0])])
        .await;
    let capped = eventually(Duration::from_secs(60), || async {
        let out = wxpush_testkit::run(&f.env, &["message", "status", "b-0", "--json"]);
        wxpush_testkit::stdout(&out).contains("capped")
    })
    .await;
    assert!(capped);
    assert_eq!(f.accepted_per_user().get(&users[0]), Some(&2));
    assert_eq!(f.usable(&users[0]).await, 1);
    f.stop_all();
}

/// What counts toward the cap, on the bank alone (the scripts the senders run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_claims_count_and_outcomes_that_cannot_have_reached_give_their_place_back() {
    let f = Fleet::new("cap_bank", 100_000, 10).await;
    let users = f.users(0, 1, 6).await;
    let who = OpenId::new(&users[0]).unwrap();
    let bank = &f.deps.bank;
    let app = &f.env.app;
    let lease = Duration::from_secs(10);
    let cap = ClaimExtras {
        cap: Some(1),
        ..ClaimExtras::default()
    };
    let claim = |c: &'static str, owner: &'static str, extras: ClaimExtras<'static>| {
        let (bank, app, who) = (bank.clone(), app.clone(), who.clone());
        async move {
            bank.campaign_claim_with(&app, &who, c, owner, lease, ClaimMode::Take, extras)
                .await
                .unwrap()
                .0
        }
    };
    let settle = |c: &'static str, owner: &'static str, outcome: &'static str| {
        let (bank, app, who) = (bank.clone(), app.clone(), who.clone());
        async move {
            let how = Settle::Final {
                outcome,
                give_back: outcome.starts_with("failed"),
            };
            assert!(bank
                .campaign_settle(&app, &who, c, "", owner, how)
                .await
                .unwrap());
        }
    };
    // c1 holds a credential, in flight: c2 is capped, nothing taken.
    assert!(matches!(
        claim("c1", "o1", cap).await,
        CampaignClaim::Fresh(_)
    ));
    assert!(matches!(
        claim("c2", "o2", cap).await,
        CampaignClaim::Capped
    ));
    assert_eq!(bank.usable_count(app, &who).await.unwrap(), 5);
    // A message that does not count (no cap asked) is not held to it.
    let free = claim("free", "of", ClaimExtras::default()).await;
    assert!(matches!(free, CampaignClaim::Fresh(_)), "{free:?}");
    settle("free", "of", "sent").await;
    // c1 refused for good: its place is given back, c3 goes.
    settle("c1", "o1", "failed:40037").await;
    assert!(matches!(
        claim("c3", "o3", cap).await,
        CampaignClaim::Fresh(_)
    ));
    // c3 may have reached the user (sent_unconfirmed): it keeps its place.
    settle("c3", "o3", "sent_unconfirmed").await;
    assert!(matches!(
        claim("c4", "o4", cap).await,
        CampaignClaim::Capped
    ));
    // A capped recipient is settled: its job's copy is a duplicate.
    assert!(matches!(
        claim("c4", "o5", cap).await,
        CampaignClaim::Done(ref o) if o == "capped"
    ));
    // A cap of 2 lets one more in.
    let two = ClaimExtras {
        cap: Some(2),
        ..ClaimExtras::default()
    };
    assert!(matches!(
        claim("c5", "o6", two).await,
        CampaignClaim::Fresh(_)
    ));
    assert!(matches!(
        claim("c6", "o7", two).await,
        CampaignClaim::Capped
    ));
    let counts = f.counts("c2").await;
    assert_eq!(counts.get("capped"), Some(&1), "{counts:?}");
}
