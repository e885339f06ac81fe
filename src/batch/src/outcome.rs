//! What an answer to a chunk means, decided in one place ([`decide`]) from the status and
//! the body, whoever answered: order-processor (`{"error":{"code","message"}}`,
//! [`common::wire::ErrorBody`]), a sidecar (`{"errorCode":"ERR_…","message"}`) or nobody
//! (no connection, a timeout).

use axum::body::Bytes;
use common::order::WriteOutcome;
use common::wire::{ErrorBody, largest_order};
use reqwest::StatusCode;

use crate::cut::Limit;

/// The most characters of a message kept in a reason.
const MAX_MESSAGE_CHARS: usize = 300;

/// What to change when the two services do not understand each other.
pub const SAME_VERSION: &str =
    "run batch and order-processor of the same release: they disagree on the request or the answer";

/// What came back from one attempt to send a chunk: an answer's status and body, from the
/// sidecar or from order-processor; or no answer (the sidecar could not be reached, or did
/// not answer in time), and why.
pub type Reply = Result<(StatusCode, Bytes), String>;

/// What became of a chunk, as far as the answer tells; its name, as a chunk's span carries
/// it, is written in snake case (`<&str>::from`).
#[derive(Debug, Clone, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ChunkOutcome {
    /// Stored: some new, some already there, some in conflict, as order-processor counted
    /// them (the counts add up to the chunk's orders).
    Stored(WriteOutcome),
    /// Refused as too large: the halves of a chunk may pass; one order is set aside.
    TooLarge {
        /// Which limit.
        limit: Limit,
        /// What the answer said.
        reason: String,
        /// The setting to change when even one order is refused.
        what_to_change: String,
    },
    /// A failure that may pass: tried again, then left for the next run.
    RetryLater {
        /// What happened.
        reason: String,
    },
    /// Cannot be stored as things are: set aside until someone changes something.
    CannotSend {
        /// What happened.
        reason: String,
        /// The setting, deployment or database to change.
        what_to_change: String,
    },
}

/// Decides what `reply` means for a chunk of `orders` orders:
///
/// | answer | outcome |
/// | --- | --- |
/// | 2xx with counts that add up | [`ChunkOutcome::Stored`] |
/// | 2xx whose JSON is cut short (daprd has sent the status when the copy fails) | [`ChunkOutcome::RetryLater`] |
/// | 400 `too_many_orders`; 413 `body_too_large`, `too_large_for_binding`; daprd's 500 `ERR_DIRECT_INVOKE` over the message limit | [`ChunkOutcome::TooLarge`]: split in halves; one order set aside |
/// | 500 `database_refused` (a SQLSTATE that does not pass by itself), 500 `binding_forbidden`, 422 (order-processor judges orders otherwise: another release), any other 4xx, a 2xx body that cannot be read | [`ChunkOutcome::CannotSend`] |
/// | 408, 429, any other 5xx, no answer | [`ChunkOutcome::RetryLater`] |
pub fn decide(orders: usize, reply: Reply) -> ChunkOutcome {
    let (status, body) = match reply {
        Err(why) => {
            return ChunkOutcome::RetryLater {
                reason: format!("no answer through the sidecar: {why}"),
            };
        }
        Ok(answer) => answer,
    };
    if status.is_success() {
        return stored(orders, status, &body);
    }
    let (who, code, message) = refusal(&body);
    let reason = format!("{who} answered {status}: {message}");
    let too_large = |limit| ChunkOutcome::TooLarge {
        limit,
        reason: reason.clone(),
        what_to_change: match limit {
            Limit::Orders => "order-processor refuses even one order per request: check its \
                              MAX_ORDERS_PER_REQUEST"
                .to_owned(),
            Limit::Bytes => format!(
                "raise the request body limits of the sidecars and order-processor to at least \
                 {} bytes, what the largest valid order takes",
                largest_order().largest()
            ),
        },
    };
    match (status.as_u16(), code.as_str()) {
        (400, "too_many_orders") => too_large(Limit::Orders),
        (413, "body_too_large" | "too_large_for_binding") => too_large(Limit::Bytes),
        // daprd 1.16 answers an invocation over the sidecars' message limit (its
        // --max-body-size) with a 500, not a 413: gRPC's ResourceExhausted when batch's
        // sidecar sends it, "stream too large" when the other sidecar reads it.
        (500, "ERR_DIRECT_INVOKE")
            if message.contains("ResourceExhausted") || message.contains("stream too large") =>
        {
            too_large(Limit::Bytes)
        }
        (500, "database_refused") => cannot_send(
            reason,
            "the database refused order-processor's statement: check its table (order-processor's \
             migrations) and its role's privileges (the bootstrap); order-processor's log has \
             the database's message",
        ),
        (500, "binding_forbidden") => cannot_send(
            reason,
            "let order-processor's sidecar take its binding calls: order-processor's \
             DAPR_API_TOKEN must be its sidecar's token, and the PostgreSQL binding \
             component scoped to order-processor",
        ),
        (408 | 429 | 500..=599, _) => ChunkOutcome::RetryLater { reason },
        (401 | 403, _) => cannot_send(
            reason,
            "DAPR_API_TOKEN of batch must be the token its sidecar requires, and \
             order-processor's APP_API_TOKEN the token its sidecar sends",
        ),
        (404, _) => cannot_send(
            reason,
            "TARGET_APP_ID of batch must be order-processor's Dapr app id, and that app must \
             serve POST /orders",
        ),
        (413, _) => cannot_send(
            reason,
            "lower CHUNK_BYTES of batch below the sidecars' request body limit \
             (daprd's --max-body-size)",
        ),
        _ => cannot_send(reason, SAME_VERSION),
    }
}

fn stored(orders: usize, status: StatusCode, body: &[u8]) -> ChunkOutcome {
    let problem = match serde_json::from_slice::<WriteOutcome>(body) {
        Ok(outcome)
            if outcome.received == orders as u64
                && outcome.inserted + outcome.unchanged + outcome.conflicts.len() as u64
                    == outcome.received =>
        {
            return ChunkOutcome::Stored(outcome);
        }
        Ok(_) => format!("for {orders} orders with counts that do not add up"),
        // daprd sends the status before it copies the body, and cannot take it back when
        // the copy fails (the other sidecar stopped): an answer cut short may pass later.
        Err(error) if error.is_eof() => {
            let reason = format!("the answer ({status}) was cut short: {error}");
            return ChunkOutcome::RetryLater { reason };
        }
        Err(error) => format!("with a body batch cannot read ({error})"),
    };
    let answer = excerpt(&String::from_utf8_lossy(body));
    let reason = format!("order-processor answered {status} {problem}: {answer}");
    cannot_send(reason, SAME_VERSION)
}

fn cannot_send(reason: String, what_to_change: &str) -> ChunkOutcome {
    ChunkOutcome::CannotSend {
        reason,
        what_to_change: what_to_change.to_owned(),
    }
}

/// Who refused, their code and their message (with the first invalid order's problem,
/// when order-processor named some).
fn refusal(body: &[u8]) -> (&'static str, String, String) {
    if let Ok(ErrorBody { error }) = serde_json::from_slice(body) {
        let message = match error.details.as_deref().and_then(<[_]>::first) {
            Some(problem) => format!("{} (first: {problem})", error.message),
            None => error.message,
        };
        let code = error.code.into_owned();
        return ("order-processor", code, excerpt(&message));
    }
    let daprd: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match (daprd["errorCode"].as_str(), daprd["message"].as_str()) {
        (Some(code), message) => {
            let message = excerpt(&format!("{code}: {}", message.unwrap_or_default()));
            ("the Dapr sidecar", code.to_owned(), message)
        }
        _ => {
            let message = excerpt(&String::from_utf8_lossy(body));
            ("the sidecar or order-processor", String::new(), message)
        }
    }
}

/// The start of `text`, for a reason that stays readable.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> ChunkOutcome {
        decide(
            3,
            Ok((
                StatusCode::from_u16(status).unwrap(),
                Bytes::from(body.to_owned()),
            )),
        )
    }

    fn ours(code: &'static str, message: &str) -> String {
        serde_json::to_string(&ErrorBody::new(code, message)).unwrap()
    }

    fn what_to_change(outcome: &ChunkOutcome) -> &str {
        match outcome {
            ChunkOutcome::CannotSend { what_to_change, .. } => what_to_change,
            other => panic!("expected CannotSend, got {other:?}"),
        }
    }

    #[test]
    fn a_2xx_whose_counts_add_up_is_stored_and_any_other_is_not() {
        let outcome = answer(
            200,
            r#"{"received":3,"inserted":1,"unchanged":1,"conflicts":[9]}"#,
        );
        assert_eq!(
            outcome,
            ChunkOutcome::Stored(WriteOutcome {
                received: 3,
                inserted: 1,
                unchanged: 1,
                conflicts: vec![9]
            })
        );
        for body in [
            "OK",
            r#"{"received":3}"#,
            r#"{"received":2,"inserted":2,"unchanged":0,"conflicts":[]}"#,
        ] {
            let refused = answer(200, body);
            assert_eq!(what_to_change(&refused), SAME_VERSION, "{body}");
            let ChunkOutcome::CannotSend { reason, .. } = refused else {
                unreachable!()
            };
            assert!(reason.ends_with(&format!(": {body}")), "{reason}");
        }
        for body in ["", r#"{"received":3,"ins"#] {
            assert!(
                matches!(answer(200, body), ChunkOutcome::RetryLater { .. }),
                "{body:?}"
            );
        }
    }

    #[test]
    fn too_many_orders_and_too_large_bodies_are_split_never_set_aside() {
        assert!(matches!(
            answer(400, &ours("too_many_orders", "at most 2 are accepted at once")),
            ChunkOutcome::TooLarge { limit: Limit::Orders, reason, .. } if reason.contains("at most 2")
        ));
        for code in ["body_too_large", "too_large_for_binding"] {
            assert!(matches!(
                answer(413, &ours(code, "too large")),
                ChunkOutcome::TooLarge {
                    limit: Limit::Bytes,
                    ..
                }
            ));
        }
        for message in [
            "failed to invoke, id: order-processor, err: rpc error: code = ResourceExhausted \
             desc = trying to send message larger than max (754 vs. 512)",
            "failed to invoke, id: order-processor, err: stream too large",
        ] {
            let refused = serde_json::json!({"errorCode": "ERR_DIRECT_INVOKE", "message": message});
            assert!(matches!(
                answer(500, &refused.to_string()),
                ChunkOutcome::TooLarge {
                    limit: Limit::Bytes,
                    ..
                }
            ));
        }
    }

    #[test]
    fn one_order_refused_as_too_large_is_set_aside_with_the_limit_to_change() {
        let one = |status, body: &str| {
            let status = StatusCode::from_u16(status).unwrap();
            let body = Bytes::from(body.to_owned());
            decide(1, Ok((status, body)))
        };
        let refusals = [
            (
                400,
                ours("too_many_orders", "at most 0"),
                "MAX_ORDERS_PER_REQUEST",
            ),
            (
                413,
                ours("body_too_large", "too large"),
                "request body limits",
            ),
        ];
        for (status, body, setting) in refusals {
            let ChunkOutcome::TooLarge { what_to_change, .. } = one(status, &body) else {
                panic!("{status} {body}: not set aside");
            };
            assert!(what_to_change.contains(setting), "{what_to_change}");
        }
    }

    #[test]
    fn a_permanent_refusal_is_set_aside_with_what_to_change_and_is_not_retried() {
        let refused = answer(
            500,
            &ours(
                "database_refused",
                "the database refused the statement (SQLSTATE 42501: …)",
            ),
        );
        let ChunkOutcome::CannotSend {
            reason,
            what_to_change: change,
        } = &refused
        else {
            panic!("{refused:?}");
        };
        assert!(reason.contains("SQLSTATE 42501"), "{reason}");
        assert!(change.contains("privileges"), "{change}");
        let forbidden = answer(500, &ours("binding_forbidden", "refused"));
        assert!(what_to_change(&forbidden).contains("scoped to order-processor"));
        let mut invalid = ErrorBody::new("invalid_orders", "1 order is invalid");
        invalid.error.details = Some(vec![common::order::OrderError::new(
            1,
            Some(2),
            "price",
            "x",
        )]);
        let outcome = answer(422, &serde_json::to_string(&invalid).unwrap());
        assert_eq!(what_to_change(&outcome), SAME_VERSION);
        let daprd = |code: &str| {
            serde_json::json!({ "errorCode": code, "message": "failed to invoke, id: order-processor" })
                .to_string()
        };
        let not_found = answer(404, &daprd("ERR_DIRECT_INVOKE"));
        let ChunkOutcome::CannotSend { reason, .. } = &not_found else {
            panic!("{not_found:?}");
        };
        assert!(
            reason
                .starts_with("the Dapr sidecar answered 404 Not Found: ERR_DIRECT_INVOKE: failed"),
            "{reason}"
        );
        assert!(what_to_change(&not_found).contains("TARGET_APP_ID"));
        assert!(
            what_to_change(&answer(401, &daprd("ERR_UNAUTHORIZED"))).contains("DAPR_API_TOKEN")
        );
        assert!(what_to_change(&answer(413, &daprd("ERR_BODY_TOO_LARGE"))).contains("CHUNK_BYTES"));
        assert_eq!(what_to_change(&answer(302, "")), SAME_VERSION);
    }

    #[test]
    fn failures_that_may_pass_are_retried_later() {
        for (status, body) in [
            (503, ours("unavailable", "storage is unavailable")),
            (500, ours("internal", "x")),
            (502, String::new()),
            (429, String::new()),
            (408, String::new()),
            (
                500,
                r#"{"errorCode":"ERR_DIRECT_INVOKE","message":"connection refused"}"#.to_owned(),
            ),
        ] {
            assert!(
                matches!(answer(status, &body), ChunkOutcome::RetryLater { .. }),
                "{status}"
            );
        }
        assert!(matches!(
            decide(1, Err("connection refused".into())),
            ChunkOutcome::RetryLater { reason } if reason.contains("connection refused")
        ));
    }

    #[test]
    fn a_long_message_is_cut_short() {
        let ChunkOutcome::CannotSend { reason, .. } = answer(400, &"x".repeat(5000)) else {
            panic!("not cannot-send");
        };
        assert!(reason.chars().count() < MAX_MESSAGE_CHARS + 100);
        assert!(reason.ends_with('…'));
    }
}
