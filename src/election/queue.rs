//! The queue under `<lock>/`, as transactions and their answers: pure builders and parsers, with no
//! I/O, so that every answer a gateway can give is tested on canned JSON.
//!
//! A candidate's key is `<lock>/<lease id in lower-case hex>` = identity, attached to its lease and
//! created by a transaction guarded on `create_revision == 0`; its create_revision is its place. The
//! leader is the key with the lowest create_revision. A *look* is one transaction that proves our
//! key still exists with our revision and reads the key just before ours (and the leader, for the
//! status): an answer that lacks any of it is an error, never "nobody ahead of us".

use crate::etcd::wire::prefix_end;
use crate::etcd::{
    Compare, CompareResult, KeyValue, Op, OpResponse, RangeRequest, RangeResponse, SortOrder,
    SortTarget, TxnRequest, TxnResponse,
};

/// `<lock>/`.
pub(crate) fn prefix(lock: &str) -> String {
    format!("{lock}/")
}

/// Our key for `lease`: the layout of etcd's `concurrency.Election`.
pub(crate) fn key_for(lock: &str, lease: i64) -> String {
    format!("{}{lease:x}", prefix(lock))
}

/// The key with the lowest create_revision under the prefix: the leader's.
pub(crate) fn leader_range(lock: &str) -> RangeRequest {
    holders_range(lock, 1)
}

/// The `holders` keys with the lowest create_revisions: those that lead (HOLDERS).
fn holders_range(lock: &str, holders: u32) -> RangeRequest {
    RangeRequest::prefix(prefix(lock))
        .sort(SortTarget::Create, SortOrder::Ascend)
        .limit(i64::from(holders))
}

/// The identity a key carries (its value), for logs and the status.
pub(crate) fn identity_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(&kv.value).into_owned()
}

/// A key's name, for logs.
pub(crate) fn name_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(&kv.key).into_owned()
}

/// Where a freshly created key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    /// Its create_revision.
    pub revision: i64,
    /// The same transaction saw it at the head of the queue: we lead without another look.
    pub at_head: bool,
    /// The leader's identity as the transaction saw it.
    pub leader: Option<String>,
    /// Another live key with our identity (an earlier run of ours), when the transaction was asked
    /// to look for one.
    pub twin: Option<KeyValue>,
}

/// How [`create`] is to create our key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    /// Just create it.
    Plain,
    /// Also read every key under the prefix, to find an earlier run's key with our identity
    /// (seamless takeover) without another round trip.
    LookForTwin,
    /// Delete every other key under the prefix first (FORCE_ACQUIRE).
    Force,
}

/// What our key is, for [`create`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ours<'a> {
    pub key: &'a str,
    pub identity: &'a str,
    pub lease: i64,
}

/// Creates our key if it does not exist, and reads the head of the queue (which sees our put): the
/// `holders` lowest keys. With [`Join::Force`], every other key under the prefix is deleted first
/// — in two ranges around our key, since etcd refuses a put inside a range the same transaction
/// deletes.
pub(crate) fn create(lock: &str, ours: Ours<'_>, join: Join, holders: u32) -> TxnRequest {
    let Ours {
        key,
        identity,
        lease,
    } = ours;
    let force = join == Join::Force;
    let mut success = Vec::new();
    if force {
        let prefix = prefix(lock).into_bytes();
        let mut after_key = key.as_bytes().to_vec();
        after_key.push(0);
        success.push(Op::Delete {
            key: prefix.clone(),
            range_end: key.as_bytes().to_vec(),
        });
        success.push(Op::Delete {
            key: after_key,
            range_end: prefix_end(&prefix),
        });
    }
    success.push(Op::Put {
        key: key.as_bytes().to_vec(),
        value: identity.as_bytes().to_vec(),
        lease,
    });
    success.push(Op::Range(holders_range(lock, holders)));
    if join == Join::LookForTwin {
        success.push(Op::Range(RangeRequest::prefix(prefix(lock))));
    }
    TxnRequest {
        compare: vec![Compare::create_revision(key, CompareResult::Equal, 0)],
        success,
        failure: vec![Op::Range(RangeRequest::key(key))],
    }
}

/// Reads the answer to [`create`] for `join`. A failed compare means the key exists already (the
/// lease was reused): its own create_revision is kept, unless it belongs to another lease.
pub(crate) fn created(answer: TxnResponse, ours: Ours<'_>, join: Join) -> Result<Created, String> {
    let Ours {
        key,
        identity,
        lease,
    } = ours;
    if answer.succeeded {
        let mut ranges = answer.responses.into_iter().filter_map(|op| match op {
            OpResponse::Range(range) => Some(range),
            _ => None,
        });
        let heads = ranges
            .next()
            .ok_or("the create answered without the head of the queue")?
            .kvs;
        let twin = match join {
            Join::LookForTwin => ranges
                .next()
                .ok_or("the create answered without the keys under the lock")?
                .kvs
                .into_iter()
                .find(|kv| kv.value == identity.as_bytes() && kv.lease != 0 && kv.lease != lease),
            Join::Plain | Join::Force => None,
        };
        return Ok(Created {
            revision: answer.header.revision,
            at_head: heads.iter().any(|kv| kv.key == key.as_bytes()),
            leader: heads.first().map(identity_of),
            twin,
        });
    }
    let existing = last_range(answer.responses)
        .and_then(|range| range.kvs.into_iter().next())
        .ok_or_else(|| format!("the create of {key} failed and the key cannot be read"))?;
    if existing.lease != lease {
        return Err(format!(
            "{key} exists with another lease ({:x})",
            existing.lease
        ));
    }
    Ok(Created {
        revision: existing.create_revision,
        at_head: false,
        leader: None,
        twin: None,
    })
}

/// Where our key stands, as one look saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Position {
    /// Fewer keys than HOLDERS are ahead of us: we lead.
    Head { revision: i64 },
    /// `ahead` are the HOLDERS keys just ahead of us, nearest first; `alone` when they are the
    /// only keys ahead.
    Behind {
        ahead: Vec<KeyValue>,
        alone: bool,
        revision: i64,
        leader: Option<String>,
    },
    /// Our key no longer exists with our revision.
    Lost,
}

/// The look for our `key` created at `revision`: does it still exist, and which `holders` keys are
/// just ahead of it? (Fewer than `holders`: we lead.)
pub(crate) fn look(lock: &str, key: &str, revision: i64, holders: u32) -> TxnRequest {
    let predecessor = RangeRequest::prefix(prefix(lock))
        .max_create_revision(revision.saturating_sub(1))
        .sort(SortTarget::Create, SortOrder::Descend)
        .limit(i64::from(holders));
    TxnRequest {
        compare: vec![Compare::create_revision(
            key,
            CompareResult::Equal,
            revision,
        )],
        success: vec![Op::Range(predecessor), Op::Range(leader_range(lock))],
        failure: vec![],
    }
}

/// Reads the answer to [`look`] for `holders`; both ranges must be there.
pub(crate) fn position(answer: TxnResponse, holders: u32) -> Result<Position, String> {
    if !answer.succeeded {
        return Ok(Position::Lost);
    }
    let revision = answer.header.revision;
    let ranges: Vec<RangeResponse> = answer
        .responses
        .into_iter()
        .filter_map(|op| match op {
            OpResponse::Range(range) => Some(range),
            _ => None,
        })
        .collect();
    let [predecessor, leader]: [RangeResponse; 2] = ranges
        .try_into()
        .map_err(|ranges: Vec<_>| format!("the look answered {} of 2 ranges", ranges.len()))?;
    let leader = leader.kvs.first().map(identity_of);
    // etcd sets `more` after dropping the keys above max_create_revision (`count` is before).
    let alone = !predecessor.more;
    let ahead = predecessor.kvs;
    Ok(
        match ahead.len() < usize::try_from(holders).unwrap_or(usize::MAX) {
            true => Position::Head { revision },
            false => Position::Behind {
                ahead,
                alone,
                revision,
                leader,
            },
        },
    )
}

/// The leader's check that its key is still its own: a read of the key.
pub(crate) fn confirm(key: &str) -> RangeRequest {
    RangeRequest::key(key)
}

/// Reads the answer to [`confirm`]: the revision it was read at if our key (our revision) is
/// there, `None` if it is gone.
pub(crate) fn confirmed(answer: &RangeResponse, revision: i64) -> Option<i64> {
    let ours = answer.kvs.iter().any(|kv| kv.create_revision == revision);
    ours.then_some(answer.header.revision)
}

/// The identity of the leader in a range answered for [`leader_range`].
pub(crate) fn leader_of(answer: &RangeResponse) -> Option<String> {
    answer.kvs.first().map(identity_of)
}

fn last_range(responses: Vec<OpResponse>) -> Option<RangeResponse> {
    responses.into_iter().rev().find_map(|op| match op {
        OpResponse::Range(range) => Some(range),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(key: &str, lease: i64) -> Ours<'_> {
        Ours {
            key,
            identity: "me",
            lease,
        }
    }

    fn txn(json: &str) -> TxnResponse {
        serde_json::from_str(json).expect("canned answer parses")
    }

    #[test]
    fn keys_follow_the_concurrency_election_layout() {
        assert_eq!(
            key_for("jobs", 0x694d_8a2c_1f3b_0c05),
            "jobs/694d8a2c1f3b0c05"
        );
        assert_eq!(prefix("a/b"), "a/b/");
    }

    #[test]
    fn a_create_puts_with_the_lease_guarded_on_absence_and_reads_the_head() {
        let body = create("l", ours("l/1f", 31), Join::Plain, 1).to_json();
        assert_eq!(body["compare"][0]["create_revision"], "0");
        assert_eq!(body["success"][0]["request_put"]["lease"], "31");
        assert_eq!(body["success"][1]["request_range"]["limit"], "1");
        assert_eq!(body["success"][1]["request_range"]["sort_order"], "ASCEND");
        assert_eq!(body["failure"][0]["request_range"]["key"], "bC8xZg==");
    }

    #[test]
    fn force_deletes_around_our_key_before_the_put() {
        let body = create("l", ours("l/5", 5), Join::Force, 1).to_json();
        let deletes = &body["success"];
        assert_eq!(deletes[0]["request_delete_range"]["key"], "bC8="); // l/
        assert_eq!(deletes[0]["request_delete_range"]["range_end"], "bC81"); // l/5
        assert_eq!(deletes[1]["request_delete_range"]["key"], "bC81AA=="); // l/5\0
        assert_eq!(deletes[1]["request_delete_range"]["range_end"], "bDA="); // l0
        assert!(deletes[2]["request_put"].is_object());
    }

    #[test]
    fn a_created_key_at_the_head_leads_at_once() {
        let answer = txn(
            r#"{"header":{"revision":"12"},"succeeded":true,"responses":[
              {"response_put":{"header":{"revision":"12"}}},
              {"response_range":{"header":{"revision":"12"},"kvs":[{"key":"bC8xZg==","value":"bWU=","create_revision":"12","lease":"31"}],"count":"1"}}]}"#,
        );
        let created = created(answer, ours("l/1f", 31), Join::Plain).unwrap();
        assert_eq!(created.revision, 12);
        assert!(created.at_head);
        assert_eq!(created.leader.as_deref(), Some("me"));
    }

    #[test]
    fn a_created_key_behind_another_waits_and_a_missing_head_is_an_error() {
        let behind = txn(
            r#"{"header":{"revision":"13"},"succeeded":true,"responses":[
              {"response_put":{}},
              {"response_range":{"kvs":[{"key":"bC9h","value":"b3RoZXI=","create_revision":"4"}],"more":true,"count":"2"}}]}"#,
        );
        let created = created(behind, ours("l/1f", 31), Join::Plain).unwrap();
        assert!(!created.at_head);
        assert_eq!(created.leader.as_deref(), Some("other"));
        let no_head = txn(
            r#"{"header":{"revision":"13"},"succeeded":true,"responses":[{"response_put":{}}]}"#,
        );
        assert!(super::created(no_head, ours("l/1f", 31), Join::Plain).is_err());
    }

    #[test]
    fn a_failed_create_keeps_the_existing_key_of_our_lease_only() {
        let exists = |lease: &str| {
            txn(&format!(
                r#"{{"header":{{"revision":"20"}},"responses":[{{"response_range":{{"kvs":[{{"key":"bC8xZg==","create_revision":"9","lease":"{lease}"}}]}}}}]}}"#
            ))
        };
        assert_eq!(
            created(exists("31"), ours("l/1f", 31), Join::Plain)
                .unwrap()
                .revision,
            9
        );
        assert!(created(exists("32"), ours("l/1f", 31), Join::Plain).is_err());
        let unreadable = txn(r#"{"header":{"revision":"20"},"responses":[{"response_range":{}}]}"#);
        assert!(created(unreadable, ours("l/1f", 31), Join::Plain).is_err());
    }

    #[test]
    fn a_join_that_looks_for_a_twin_finds_an_earlier_run_of_ours_only() {
        let body = create("l", ours("l/1f", 31), Join::LookForTwin, 1).to_json();
        assert_eq!(body["success"][2]["request_range"]["range_end"], "bDA="); // the prefix's end
                                                                              // Keys: someone else, an earlier run of ours (lease 9), and our own new key (lease 31).
        let answer = txn(
            r#"{"header":{"revision":"12"},"succeeded":true,"responses":[
              {"response_put":{}},
              {"response_range":{"kvs":[{"key":"bC9h","value":"eW91","create_revision":"3","lease":"7"}]}},
              {"response_range":{"kvs":[
                {"key":"bC9h","value":"eW91","create_revision":"3","lease":"7"},
                {"key":"bC85","value":"bWU=","create_revision":"5","lease":"9"},
                {"key":"bC8xZg==","value":"bWU=","create_revision":"12","lease":"31"}]}}]}"#,
        );
        let found = created(answer.clone(), ours("l/1f", 31), Join::LookForTwin).unwrap();
        assert_eq!(found.twin.map(|kv| kv.lease), Some(9));
        let not_asked = created(answer, ours("l/1f", 31), Join::Plain).unwrap();
        assert_eq!(not_asked.twin, None);
        let missing = txn(
            r#"{"header":{"revision":"12"},"succeeded":true,"responses":[{"response_put":{}},{"response_range":{}}]}"#,
        );
        assert!(created(missing, ours("l/1f", 31), Join::LookForTwin).is_err());
    }

    #[test]
    fn a_look_proves_our_key_and_reads_the_predecessor_below_our_revision() {
        let body = look("l", "l/1f", 12, 1).to_json();
        assert_eq!(body["compare"][0]["create_revision"], "12");
        let predecessor = &body["success"][0]["request_range"];
        assert_eq!(predecessor["max_create_revision"], "11");
        assert_eq!(predecessor["sort_order"], "DESCEND");
        assert_eq!(predecessor["sort_target"], "CREATE");
        assert_eq!(predecessor["limit"], "1");
    }

    #[test]
    fn look_answers_give_head_behind_or_lost() {
        let head = txn(
            r#"{"header":{"revision":"30"},"succeeded":true,"responses":[
              {"response_range":{}},{"response_range":{"kvs":[{"key":"bC8xZg==","value":"bWU="}],"count":"1"}}]}"#,
        );
        assert_eq!(position(head, 1), Ok(Position::Head { revision: 30 }));
        let behind = txn(
            r#"{"header":{"revision":"31"},"succeeded":true,"responses":[
              {"response_range":{"kvs":[{"key":"bC9h","value":"YQ==","create_revision":"7"}],"count":"3"}},
              {"response_range":{"kvs":[{"key":"bC9h","value":"YQ=="}],"count":"2"}}]}"#,
        );
        let Ok(Position::Behind {
            ahead,
            alone,
            revision,
            leader,
        }) = position(behind, 1)
        else {
            panic!("expected Behind");
        };
        assert_eq!((ahead[0].create_revision, alone, revision), (7, true, 31));
        assert_eq!(leader.as_deref(), Some("a"));
        let crowded = txn(
            r#"{"header":{"revision":"31"},"succeeded":true,"responses":[
              {"response_range":{"kvs":[{"key":"bC9i"}],"more":true,"count":"3"}},{"response_range":{}}]}"#,
        );
        assert!(matches!(
            position(crowded, 1),
            Ok(Position::Behind { alone: false, .. })
        ));
        assert_eq!(
            position(txn(r#"{"header":{"revision":"32"}}"#), 1),
            Ok(Position::Lost)
        );
    }

    #[test]
    fn with_two_holders_one_key_ahead_still_leads_and_two_keys_ahead_wait() {
        let body = look("l", "l/1f", 12, 2).to_json();
        assert_eq!(body["success"][0]["request_range"]["limit"], "2");
        let one_ahead = txn(
            r#"{"header":{"revision":"31"},"succeeded":true,"responses":[
              {"response_range":{"kvs":[{"key":"bC9h","create_revision":"7"}]}},{"response_range":{}}]}"#,
        );
        assert_eq!(position(one_ahead, 2), Ok(Position::Head { revision: 31 }));
        let two_ahead = txn(
            r#"{"header":{"revision":"31"},"succeeded":true,"responses":[
              {"response_range":{"kvs":[{"key":"bC9i","create_revision":"9"},{"key":"bC9h","create_revision":"7"}]}},
              {"response_range":{}}]}"#,
        );
        let Ok(Position::Behind { ahead, .. }) = position(two_ahead, 2) else {
            panic!("expected Behind");
        };
        assert_eq!(
            ahead
                .iter()
                .map(|kv| kv.create_revision)
                .collect::<Vec<_>>(),
            [9, 7]
        );
        let body = create("l", ours("l/1f", 31), Join::Plain, 2).to_json();
        assert_eq!(body["success"][1]["request_range"]["limit"], "2");
    }

    #[test]
    fn a_look_answer_missing_a_range_is_an_error_not_the_head() {
        for answer in [
            r#"{"header":{"revision":"30"},"succeeded":true}"#,
            r#"{"header":{"revision":"30"},"succeeded":true,"responses":[{"response_range":{}}]}"#,
            r#"{"header":{"revision":"30"},"succeeded":true,"responses":[{"response_put":{}},{"response_range":{}}]}"#,
        ] {
            assert!(position(txn(answer), 1).is_err(), "{answer}");
        }
    }

    #[test]
    fn a_confirmation_needs_our_revision() {
        let answer: RangeResponse = serde_json::from_str(
            r#"{"header":{"revision":"40"},"kvs":[{"key":"bC8xZg==","create_revision":"12"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(confirmed(&answer, 12), Some(40));
        assert_eq!(confirmed(&answer, 13), None);
        assert_eq!(confirmed(&RangeResponse::default(), 12), None);
    }
}
