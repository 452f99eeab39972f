//! The queue under `<lock>/`, as transactions and their answers: pure builders and parsers, with no
//! I/O, so that every answer a gateway can give is tested on canned JSON.
//!
//! A candidate's key is `<lock>/<lease id in lower-case hex>` = identity, attached to its lease and
//! created by a transaction guarded on `create_revision == 0`; its create_revision is its place.
//! The leaders are the HOLDERS keys with the lowest create_revisions (one, by default).
//!
//! Ownership is proven, never assumed: a key is ours while it has our create_revision *and* the
//! mod_revision of our last write to it (its *stamp*). Creating the key writes it; adopting an
//! earlier run's key (seamless takeover) is a *claim*, a transaction that rewrites it only if nobody
//! else has since — so of two instances with one identity only one can hold the key, and the other
//! sees on its next look or confirm that its stamp is gone. Every answer that lacks what it must
//! prove is an error, never "nobody ahead of us".

use crate::etcd::wire::prefix_end;
use crate::etcd::{
    Compare, CompareResult, CompareTarget, KeyValue, Op, OpResponse, RangeRequest, RangeResponse,
    SortOrder, SortTarget, TxnRequest, TxnResponse,
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
    RangeRequest::prefix(prefix(lock))
        .sort(SortTarget::Create, SortOrder::Ascend)
        .limit(1)
}

/// The identity a key carries (its value), for logs and the status.
pub(crate) fn identity_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(&kv.value).into_owned()
}

/// A key's name, for logs.
pub(crate) fn name_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(&kv.key).into_owned()
}

/// Our key, as a transaction writes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ours<'a> {
    pub key: &'a str,
    pub identity: &'a str,
    pub lease: i64,
}

/// Where our key stands, as one transaction saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Position {
    /// Fewer keys than HOLDERS are ahead of us: we lead.
    Head { revision: i64 },
    /// `ahead` are the keys just ahead of us that were read ([`ahead_read`]), nearest first;
    /// `alone` when the nearest is the only key ahead.
    Behind {
        ahead: Vec<KeyValue>,
        alone: bool,
        revision: i64,
        leader: Option<String>,
    },
    /// Our key no longer exists with our revision.
    Lost,
    /// Our key exists, with our lease, but someone else wrote it since we did: an instance with our
    /// identity took it (and our lease) over. Neither is ours any more.
    Taken,
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

/// What a join learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    /// Our key's create_revision, and its stamp (the same: the put created it).
    pub revision: i64,
    /// Where it stands; `None` when the key was our own earlier create (an attempt whose answer
    /// was lost): a look tells.
    pub position: Option<Position>,
    /// Another live key with our identity (an earlier run of ours), when asked to look.
    pub twin: Option<KeyValue>,
}

/// How many of the keys just ahead of ours are read: the HOLDERS nearest, and with one holder the
/// one before it too. With one holder, a waiter that is not the first watches that farther key:
/// its deletion (usually the leader's) leaves the waiter the only one behind the nearest, and it
/// looks again then, while the nearest leads; its own turn then comes on the nearest's deletion
/// alone.
fn ahead_read(holders: u32) -> i64 {
    match holders {
        1 => 2,
        n => i64::from(n),
    }
}

/// The ranges that tell where a key created at revision `below + 1` stands: the keys just below it
/// ([`ahead_read`], nearest first) and the leader.
fn standing(lock: &str, below: i64, holders: u32) -> [Op; 2] {
    let ahead = RangeRequest::prefix(prefix(lock))
        .max_create_revision(below)
        .sort(SortTarget::Create, SortOrder::Descend)
        .limit(ahead_read(holders));
    [Op::Range(ahead), Op::Range(leader_range(lock))]
}

/// Creates our key if it does not exist, and reads where it stands (which sees our put): the
/// newest keys — ours first, then those just ahead ([`ahead_read`]) — and the leader. With
/// [`Join::Force`], every other key under the prefix is deleted first, in two ranges around our key
/// (etcd refuses a put inside a range the same transaction deletes).
pub(crate) fn create(lock: &str, ours: Ours<'_>, join: Join, holders: u32) -> TxnRequest {
    let Ours {
        key,
        identity,
        lease,
    } = ours;
    let mut success = Vec::new();
    if join == Join::Force {
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
    // Our key is the newest: the newest are ours and those just ahead of it.
    let newest = RangeRequest::prefix(prefix(lock))
        .sort(SortTarget::Create, SortOrder::Descend)
        .limit(ahead_read(holders) + 1);
    success.push(Op::Range(newest));
    success.push(Op::Range(leader_range(lock)));
    if join == Join::LookForTwin {
        success.push(Op::Range(RangeRequest::prefix(prefix(lock))));
    }
    TxnRequest {
        compare: vec![Compare::create_revision(key, CompareResult::Equal, 0)],
        success,
        failure: vec![Op::Range(RangeRequest::key(key))],
    }
}

/// Reads the answer to [`create`]. `Ok(None)`: our key already exists and was rewritten since it
/// was created — with our lease, only an instance with our identity can have done that: the lease
/// is not ours to use any more. A key with our lease never rewritten is our own earlier create
/// (an attempt whose answer was lost): it is ours, position unknown.
pub(crate) fn created(
    answer: TxnResponse,
    ours: Ours<'_>,
    join: Join,
    holders: u32,
) -> Result<Option<Created>, String> {
    if !answer.succeeded {
        let existing = ranges(answer.responses).into_iter().next();
        let ours_before = existing
            .and_then(|r| r.kvs.into_iter().next())
            .filter(|kv| {
                kv.lease == ours.lease
                    && kv.mod_revision == kv.create_revision
                    && kv.create_revision > 0
            });
        return Ok(ours_before.map(|kv| Created {
            revision: kv.create_revision,
            position: None,
            twin: None,
        }));
    }
    let revision = answer.header.revision;
    let mut ranges = ranges(answer.responses).into_iter();
    let mut newest = ranges
        .next()
        .ok_or("the create answered without our place")?;
    let leader = ranges
        .next()
        .ok_or("the create answered without the leader")?;
    if newest
        .kvs
        .first()
        .is_none_or(|kv| kv.key != ours.key.as_bytes())
    {
        return Err("the create answered a place without our key".into());
    }
    newest.kvs.remove(0);
    let position = standing_of(newest, leader, revision, holders);
    let twin = match join {
        Join::LookForTwin => ranges
            .next()
            .ok_or("the create answered without the keys under the lock")?
            .kvs
            .into_iter()
            .find(|kv| {
                kv.value == ours.identity.as_bytes() && kv.lease != 0 && kv.lease != ours.lease
            }),
        Join::Plain | Join::Force => None,
    };
    Ok(Some(Created {
        revision,
        position: Some(position),
        twin,
    }))
}

/// The look for our key created at `revision` with stamp `stamp`: is it still ours, and which
/// `holders` keys are just ahead of it? (Fewer than `holders`: we lead.) When it is not ours, our key
/// is read to tell [`Position::Lost`] from [`Position::Taken`].
pub(crate) fn look(lock: &str, key: &str, revision: i64, stamp: i64, holders: u32) -> TxnRequest {
    TxnRequest {
        compare: ours_still(key, revision, stamp),
        success: standing(lock, revision.saturating_sub(1), holders).to_vec(),
        failure: vec![Op::Range(RangeRequest::key(key))],
    }
}

/// Reads the answer to [`look`] for our `lease` and `holders`; both ranges must be there.
pub(crate) fn position(answer: TxnResponse, lease: i64, holders: u32) -> Result<Position, String> {
    let revision = answer.header.revision;
    let succeeded = answer.succeeded;
    let ranges = ranges(answer.responses);
    if !succeeded {
        let ours = ranges.first().and_then(|r| r.kvs.first());
        return Ok(match ours {
            Some(kv) if kv.lease == lease => Position::Taken,
            _ => Position::Lost,
        });
    }
    let [ahead, leader]: [RangeResponse; 2] = ranges
        .try_into()
        .map_err(|ranges: Vec<_>| format!("the look answered {} of 2 ranges", ranges.len()))?;
    Ok(standing_of(ahead, leader, revision, holders))
}

/// Adopting an earlier run's key `twin` (as last read): rewrite it with its lease, only if nobody
/// wrote it since — one instance wins the claim. Reads where it stands, as a look would.
pub(crate) fn claim(lock: &str, twin: &KeyValue, identity: &str, holders: u32) -> TxnRequest {
    let key = twin.key.clone();
    TxnRequest {
        compare: vec![
            Compare::of(
                key.clone(),
                CompareResult::Equal,
                CompareTarget::Mod(twin.mod_revision),
            ),
            Compare::of(
                key.clone(),
                CompareResult::Equal,
                CompareTarget::Lease(twin.lease),
            ),
        ],
        success: [
            vec![Op::Put {
                key,
                value: identity.as_bytes().to_vec(),
                lease: twin.lease,
            }],
            standing(lock, twin.create_revision.saturating_sub(1), holders).to_vec(),
        ]
        .concat(),
        failure: vec![],
    }
}

/// Reads the answer to [`claim`]: our stamp and where the key stands, or `None` when another
/// instance wrote the key first.
pub(crate) fn claimed(
    answer: TxnResponse,
    holders: u32,
) -> Result<Option<(i64, Position)>, String> {
    if !answer.succeeded {
        return Ok(None);
    }
    let stamp = answer.header.revision;
    let [ahead, leader]: [RangeResponse; 2] = ranges(answer.responses)
        .try_into()
        .map_err(|ranges: Vec<_>| format!("the claim answered {} of 2 ranges", ranges.len()))?;
    Ok(Some((stamp, standing_of(ahead, leader, stamp, holders))))
}

/// Leaving with a lease that may have changed hands: delete our key only if it still bears our
/// `stamp` and `lease` (then the lease is ours to revoke, and an adopter's claim, which compares
/// the same stamp, fails).
pub(crate) fn release(key: &str, stamp: i64, lease: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![
            Compare::of(key, CompareResult::Equal, CompareTarget::Mod(stamp)),
            Compare::of(key, CompareResult::Equal, CompareTarget::Lease(lease)),
        ],
        success: vec![Op::Delete {
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
        }],
        failure: vec![],
    }
}

/// The leader's check that its key is still its own: a read of the key.
pub(crate) fn confirm(key: &str) -> RangeRequest {
    RangeRequest::key(key)
}

/// What a [`confirm`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmed {
    /// Still ours; read at this revision.
    Ours(i64),
    Lost,
    Taken,
}

/// Reads the answer to [`confirm`] for our key (`revision`, `stamp`, `lease`).
pub(crate) fn confirmed(
    answer: &RangeResponse,
    revision: i64,
    stamp: i64,
    lease: i64,
) -> Confirmed {
    match answer.kvs.first() {
        Some(kv) if kv.create_revision == revision && kv.mod_revision == stamp => {
            Confirmed::Ours(answer.header.revision)
        }
        Some(kv) if kv.create_revision == revision && kv.lease == lease => Confirmed::Taken,
        _ => Confirmed::Lost,
    }
}

/// The identity of the leader in a range answered for [`leader_range`].
pub(crate) fn leader_of(answer: &RangeResponse) -> Option<String> {
    answer.kvs.first().map(identity_of)
}

/// `create_revision == revision && mod_revision == stamp` on `key`.
fn ours_still(key: &str, revision: i64, stamp: i64) -> Vec<Compare> {
    vec![
        Compare::of(key, CompareResult::Equal, CompareTarget::Create(revision)),
        Compare::of(key, CompareResult::Equal, CompareTarget::Mod(stamp)),
    ]
}

/// Where a key stands given the `holders` keys read just below it (nearest first).
fn standing_of(
    ahead: RangeResponse,
    leader: RangeResponse,
    revision: i64,
    holders: u32,
) -> Position {
    let leader = leader.kvs.first().map(identity_of);
    // etcd sets `more` after dropping the keys above max_create_revision (`count` is before).
    let alone = ahead.kvs.len() == 1 && !ahead.more;
    match ahead.kvs.len() < usize::try_from(holders).unwrap_or(usize::MAX) {
        true => Position::Head { revision },
        false => Position::Behind {
            ahead: ahead.kvs,
            alone,
            revision,
            leader,
        },
    }
}

fn ranges(responses: Vec<OpResponse>) -> Vec<RangeResponse> {
    responses
        .into_iter()
        .filter_map(|op| match op {
            OpResponse::Range(range) => Some(range),
            _ => None,
        })
        .collect()
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
    fn a_create_puts_with_the_lease_guarded_on_absence_and_reads_its_place() {
        let body = create("l", ours("l/1f", 31), Join::Plain, 1).to_json();
        assert_eq!(body["compare"][0]["create_revision"], "0");
        assert_eq!(body["success"][0]["request_put"]["lease"], "31");
        let newest = &body["success"][1]["request_range"];
        assert_eq!(
            (newest["limit"].as_str(), newest["sort_order"].as_str()),
            (Some("3"), Some("DESCEND"))
        );
        assert_eq!(body["success"][2]["request_range"]["sort_order"], "ASCEND");
        // On failure, our key is read: our own earlier create, or taken.
        assert!(body["failure"][0]["request_range"].is_object());
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
    fn a_created_key_alone_leads_at_once_and_one_behind_another_knows_its_predecessor() {
        let head = txn(
            r#"{"header":{"revision":"12"},"succeeded":true,"responses":[
              {"response_put":{"header":{"revision":"12"}}},
              {"response_range":{"kvs":[{"key":"bC8xZg==","value":"bWU=","create_revision":"12","lease":"31"}],"count":"1"}},
              {"response_range":{"kvs":[{"key":"bC8xZg==","value":"bWU="}]}}]}"#,
        );
        let first = created(head, ours("l/1f", 31), Join::Plain, 1)
            .unwrap()
            .unwrap();
        assert_eq!(first.revision, 12);
        assert_eq!(first.position, Some(Position::Head { revision: 12 }));
        let behind = txn(
            r#"{"header":{"revision":"13"},"succeeded":true,"responses":[
              {"response_put":{}},
              {"response_range":{"kvs":[{"key":"bC8xZg==","create_revision":"13"},{"key":"bC9h","value":"b3RoZXI=","create_revision":"4"}],"more":true,"count":"3"}},
              {"response_range":{"kvs":[{"key":"bC96","value":"bGVhZA=="}]}}]}"#,
        );
        let created = created(behind, ours("l/1f", 31), Join::Plain, 1)
            .unwrap()
            .unwrap();
        let Some(Position::Behind {
            ahead,
            alone,
            leader,
            ..
        }) = created.position
        else {
            panic!("expected Behind");
        };
        assert_eq!(
            (ahead.len(), ahead[0].create_revision, alone),
            (1, 4, false)
        );
        assert_eq!(leader.as_deref(), Some("lead"));
    }

    #[test]
    fn a_create_answer_without_our_key_or_a_range_is_an_error_and_a_failed_compare_means_taken() {
        for answer in [
            r#"{"header":{"revision":"13"},"succeeded":true,"responses":[{"response_put":{}}]}"#,
            r#"{"header":{"revision":"13"},"succeeded":true,"responses":[{"response_put":{}},{"response_range":{}},{"response_range":{}}]}"#,
            r#"{"header":{"revision":"13"},"succeeded":true,"responses":[{"response_put":{}},{"response_range":{"kvs":[{"key":"bC9h"}]}},{"response_range":{}}]}"#,
        ] {
            assert!(
                created(txn(answer), ours("l/1f", 31), Join::Plain, 1).is_err(),
                "{answer}"
            );
        }
        let failed = txn(r#"{"header":{"revision":"20"}}"#);
        assert_eq!(created(failed, ours("l/1f", 31), Join::Plain, 1), Ok(None));
        // Our own earlier create, whose answer was lost: our lease, never rewritten.
        let mine = txn(
            r#"{"header":{"revision":"20"},"succeeded":false,"responses":[
              {"response_range":{"kvs":[{"key":"bC8xZg==","create_revision":"9","mod_revision":"9","lease":"31"}]}}]}"#,
        );
        let mine = created(mine, ours("l/1f", 31), Join::Plain, 1)
            .unwrap()
            .unwrap();
        assert_eq!((mine.revision, mine.position, mine.twin), (9, None, None));
        // Rewritten since (a claim by an instance with our identity): taken.
        let claimed = txn(
            r#"{"header":{"revision":"20"},"succeeded":false,"responses":[
              {"response_range":{"kvs":[{"key":"bC8xZg==","create_revision":"9","mod_revision":"14","lease":"31"}]}}]}"#,
        );
        assert_eq!(created(claimed, ours("l/1f", 31), Join::Plain, 1), Ok(None));
    }

    #[test]
    fn a_join_that_looks_for_a_twin_finds_an_earlier_run_of_ours_only() {
        let body = create("l", ours("l/1f", 31), Join::LookForTwin, 1).to_json();
        assert_eq!(body["success"][3]["request_range"]["range_end"], "bDA="); // the prefix's end
                                                                              // Keys: someone else, an earlier run of ours (lease 9), and our own new key (lease 31).
        let answer = txn(
            r#"{"header":{"revision":"12"},"succeeded":true,"responses":[
              {"response_put":{}},
              {"response_range":{"kvs":[{"key":"bC8xZg==","create_revision":"12"},{"key":"bC85","create_revision":"5"}],"more":true}},
              {"response_range":{"kvs":[{"key":"bC9h","value":"eW91"}]}},
              {"response_range":{"kvs":[
                {"key":"bC9h","value":"eW91","create_revision":"3","lease":"7"},
                {"key":"bC85","value":"bWU=","create_revision":"5","lease":"9"},
                {"key":"bC8xZg==","value":"bWU=","create_revision":"12","lease":"31"}]}}]}"#,
        );
        let found = created(answer.clone(), ours("l/1f", 31), Join::LookForTwin, 1).unwrap();
        assert_eq!(found.and_then(|c| c.twin).map(|kv| kv.lease), Some(9));
        let not_asked = created(answer, ours("l/1f", 31), Join::Plain, 1).unwrap();
        assert_eq!(not_asked.and_then(|c| c.twin), None);
    }

    #[test]
    fn a_look_proves_our_revision_and_stamp_and_reads_the_keys_just_ahead() {
        let body = look("l", "l/1f", 12, 15, 1).to_json();
        assert_eq!(body["compare"][0]["target"], "CREATE");
        assert_eq!(body["compare"][0]["create_revision"], "12");
        assert_eq!(body["compare"][1]["target"], "MOD");
        assert_eq!(body["compare"][1]["mod_revision"], "15");
        let ahead = &body["success"][0]["request_range"];
        assert_eq!(ahead["max_create_revision"], "11");
        assert_eq!(ahead["sort_order"], "DESCEND");
        assert_eq!(ahead["sort_target"], "CREATE");
        // One holder: the nearest key and the one before it; several: as many as there are.
        assert_eq!(ahead["limit"], "2");
        for holders in [2, 3] {
            let body = look("l", "l/1f", 12, 15, holders).to_json();
            assert_eq!(
                body["success"][0]["request_range"]["limit"],
                holders.to_string()
            );
        }
        assert_eq!(body["failure"][0]["request_range"]["key"], "bC8xZg==");
    }

    #[test]
    fn look_answers_give_head_behind_lost_or_taken() {
        let head = txn(
            r#"{"header":{"revision":"30"},"succeeded":true,"responses":[
              {"response_range":{}},{"response_range":{"kvs":[{"key":"bC8xZg==","value":"bWU="}],"count":"1"}}]}"#,
        );
        assert_eq!(position(head, 31, 1), Ok(Position::Head { revision: 30 }));
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
        }) = position(behind, 31, 1)
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
            position(crowded, 31, 1),
            Ok(Position::Behind { alone: false, .. })
        ));
        // Two keys ahead, nearest first: not alone (the farther one is the one watched).
        let second = txn(
            r#"{"header":{"revision":"31"},"succeeded":true,"responses":[
              {"response_range":{"kvs":[{"key":"bC9i","create_revision":"9"},{"key":"bC9h","create_revision":"7"}],"count":"3"}},{"response_range":{}}]}"#,
        );
        let Ok(Position::Behind { ahead, alone, .. }) = position(second, 31, 1) else {
            panic!("expected Behind");
        };
        let revisions: Vec<i64> = ahead.iter().map(|kv| kv.create_revision).collect();
        assert_eq!((revisions, alone), (vec![9, 7], false));
        let gone = txn(r#"{"header":{"revision":"32"},"responses":[{"response_range":{}}]}"#);
        assert_eq!(position(gone, 31, 1), Ok(Position::Lost));
        let taken = txn(
            r#"{"header":{"revision":"32"},"responses":[{"response_range":{"kvs":[{"key":"bC8xZg==","create_revision":"12","mod_revision":"20","lease":"31"}]}}]}"#,
        );
        assert_eq!(position(taken, 31, 1), Ok(Position::Taken));
    }

    #[test]
    fn a_look_answer_missing_a_range_is_an_error_not_the_head() {
        for answer in [
            r#"{"header":{"revision":"30"},"succeeded":true}"#,
            r#"{"header":{"revision":"30"},"succeeded":true,"responses":[{"response_range":{}}]}"#,
            r#"{"header":{"revision":"30"},"succeeded":true,"responses":[{"response_put":{}},{"response_range":{}}]}"#,
        ] {
            assert!(position(txn(answer), 31, 1).is_err(), "{answer}");
        }
    }

    #[test]
    fn with_two_holders_one_key_ahead_still_leads_and_two_keys_ahead_wait() {
        let body = look("l", "l/1f", 12, 12, 2).to_json();
        assert_eq!(body["success"][0]["request_range"]["limit"], "2");
        let one_ahead = txn(
            r#"{"header":{"revision":"31"},"succeeded":true,"responses":[
              {"response_range":{"kvs":[{"key":"bC9h","create_revision":"7"}]}},{"response_range":{}}]}"#,
        );
        assert_eq!(
            position(one_ahead, 31, 2),
            Ok(Position::Head { revision: 31 })
        );
        let two_ahead = txn(
            r#"{"header":{"revision":"31"},"succeeded":true,"responses":[
              {"response_range":{"kvs":[{"key":"bC9i","create_revision":"9"},{"key":"bC9h","create_revision":"7"}]}},
              {"response_range":{}}]}"#,
        );
        let Ok(Position::Behind { ahead, .. }) = position(two_ahead, 31, 2) else {
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
        assert_eq!(body["success"][1]["request_range"]["limit"], "3");
    }

    #[test]
    fn a_claim_rewrites_the_twin_only_if_nobody_wrote_it_since() {
        let twin = KeyValue {
            key: b"l/9".to_vec(),
            value: b"me".to_vec(),
            create_revision: 5,
            mod_revision: 6,
            version: 2,
            lease: 9,
        };
        let body = claim("l", &twin, "me", 1).to_json();
        assert_eq!(body["compare"][0]["target"], "MOD");
        assert_eq!(body["compare"][0]["mod_revision"], "6");
        assert_eq!(body["compare"][1]["target"], "LEASE");
        assert_eq!(body["compare"][1]["lease"], "9");
        assert_eq!(body["success"][0]["request_put"]["lease"], "9");
        assert_eq!(
            body["success"][1]["request_range"]["max_create_revision"],
            "4"
        );
        let won = txn(
            r#"{"header":{"revision":"40"},"succeeded":true,"responses":[{"response_put":{}},{"response_range":{}},{"response_range":{}}]}"#,
        );
        assert_eq!(
            claimed(won, 1),
            Ok(Some((40, Position::Head { revision: 40 })))
        );
        assert_eq!(claimed(txn(r#"{"header":{"revision":"40"}}"#), 1), Ok(None));
    }

    #[test]
    fn a_confirmation_needs_our_revision_and_stamp() {
        let read = |mod_revision: i64, lease: i64| -> RangeResponse {
            serde_json::from_str(&format!(
                r#"{{"header":{{"revision":"40"}},"kvs":[{{"key":"bC8xZg==","create_revision":"12","mod_revision":"{mod_revision}","lease":"{lease}"}}],"count":"1"}}"#
            ))
            .unwrap()
        };
        assert_eq!(confirmed(&read(12, 31), 12, 12, 31), Confirmed::Ours(40));
        assert_eq!(confirmed(&read(20, 31), 12, 12, 31), Confirmed::Taken);
        assert_eq!(confirmed(&read(20, 7), 12, 12, 31), Confirmed::Lost);
        assert_eq!(
            confirmed(&RangeResponse::default(), 12, 12, 31),
            Confirmed::Lost
        );
    }
}
