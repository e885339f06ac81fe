//! What an answer to a chunk means, decided in one place ([`decide`]) from the status and
//! the body, whoever answered: order-processor (`{"error":{"code","message"}}`), a
//! sidecar (`{"errorCode":"ERR_…","message"}`) or nobody (no connection, a timeout).

use axum::body::Bytes;
use common::order::{OrderError, WriteOutcome};
use reqwest::StatusCode;
use serde::Deserialize;

/// The most characters of a message kept in a reason.
const MAX_MESSAGE_CHARS: usize = 300;

/// What to change when the two services do not understand each other.
const SAME_VERSION: &str =
    "run batch and order-processor of the same release: they disagree on the request or the answer";

/// What came back from one attempt to send a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An answer, from the sidecar or from order-processor.
    Answered {
        /// Its status.
        status: StatusCode,
        /// Its body.
        body: Bytes,
    },
    /// No answer: the sidecar could not be reached, or did not answer in time.
    NoAnswer(String),
}

/// Which limit a chunk passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// order-processor's `MAX_ORDERS_PER_REQUEST`.
    Orders,
    /// A size limit: a body over 4 MiB, or a binding call too large for the sidecar.
    Bytes,
}

/// What became of a chunk, as far as the answer tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Stored: some new, some already there, some in conflict.
    Stored {
        /// Orders stored by this request.
        inserted: u64,
        /// Orders already stored with the same content.
        unchanged: u64,
        /// Ids already stored with other content, left as they were.
        conflicts: Vec<i64>,
    },
    /// Refused because of its orders; nothing of it was stored.
    Invalid {
        /// order-processor's message.
        message: String,
        /// Each bad order, positions counted within the chunk.
        details: Vec<OrderError>,
    },
    /// Refused as too large: the halves may pass.
    TooLarge {
        /// Which limit.
        limit: Limit,
        /// What the answer said.
        reason: String,
    },
    /// A failure that may pass: tried again later.
    RetryLater {
        /// What happened.
        reason: String,
    },
    /// Cannot be sent as things are configured; needs a change.
    CannotSend {
        /// What happened.
        reason: String,
        /// The setting or deployment to change.
        what_to_change: String,
    },
}

impl ChunkOutcome {
    /// The outcome's name, as a chunk's span carries it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Stored { .. } => "stored",
            Self::Invalid { .. } => "invalid",
            Self::TooLarge { .. } => "too_large",
            Self::RetryLater { .. } => "retry_later",
            Self::CannotSend { .. } => "cannot_send",
        }
    }
}

/// Decides what `reply` means for a chunk of `orders` orders:
///
/// | answer | outcome |
/// | --- | --- |
/// | 2xx with counts that add up | [`ChunkOutcome::Stored`] |
/// | 2xx whose JSON is cut short (daprd has sent the status when the copy fails) | [`ChunkOutcome::RetryLater`] |
/// | 422 `invalid_orders` | [`ChunkOutcome::Invalid`]: settled, not resent for this file |
/// | 400 `too_many_orders`; 413 `body_too_large`, `too_large_for_binding`; daprd's 500 `ERR_DIRECT_INVOKE` over the message limit | [`ChunkOutcome::TooLarge`]: split in halves |
/// | 408, 429, any other 5xx, no answer | [`ChunkOutcome::RetryLater`] |
/// | 500 `binding_forbidden`, 400 `malformed_body`, any other 4xx, a 2xx body that cannot be read | [`ChunkOutcome::CannotSend`] |
pub fn decide(orders: usize, reply: Reply) -> ChunkOutcome {
    let (status, body) = match reply {
        Reply::NoAnswer(why) => {
            return ChunkOutcome::RetryLater {
                reason: format!("no answer through the sidecar: {why}"),
            };
        }
        Reply::Answered { status, body } => (status, body),
    };
    if status.is_success() {
        return stored(orders, status, &body);
    }
    let refusal = Refusal::read(&body);
    let reason = format!("{} answered {status}: {}", refusal.who, refusal.message);
    let code = refusal.code.as_deref().unwrap_or_default();
    match (status.as_u16(), code) {
        (422, "invalid_orders") => match refusal.details {
            Some(details) => ChunkOutcome::Invalid {
                message: refusal.message,
                details,
            },
            None => cannot_send(reason, SAME_VERSION),
        },
        (400, "too_many_orders") => ChunkOutcome::TooLarge {
            limit: Limit::Orders,
            reason,
        },
        (413, "body_too_large" | "too_large_for_binding") => ChunkOutcome::TooLarge {
            limit: Limit::Bytes,
            reason,
        },
        (500, "binding_forbidden") => cannot_send(
            reason,
            "let order-processor's sidecar take its binding calls: order-processor's \
             DAPR_API_TOKEN must be its sidecar's token, and the PostgreSQL binding \
             component scoped to order-processor",
        ),
        (400, "malformed_body") => cannot_send(reason, SAME_VERSION),
        // daprd 1.16 answers an invocation over the sidecars' message limit (its
        // --max-body-size) with a 500, not a 413: gRPC's ResourceExhausted when batch's
        // sidecar sends it, "stream too large" when the other sidecar reads it.
        (500, "ERR_DIRECT_INVOKE")
            if refusal.message.contains("ResourceExhausted")
                || refusal.message.contains("stream too large") =>
        {
            ChunkOutcome::TooLarge {
                limit: Limit::Bytes,
                reason,
            }
        }
        (408 | 429, _) | (500..=599, _) => ChunkOutcome::RetryLater { reason },
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
    match serde_json::from_slice::<WriteOutcome>(body) {
        Ok(outcome)
            if outcome.received == orders as u64
                && outcome.inserted + outcome.unchanged + outcome.conflicts.len() as u64
                    == outcome.received =>
        {
            ChunkOutcome::Stored {
                inserted: outcome.inserted,
                unchanged: outcome.unchanged,
                conflicts: outcome.conflicts,
            }
        }
        Ok(outcome) => cannot_send(
            format!(
                "order-processor answered {status} for {orders} orders with counts that do not \
                 add up: {} received, {} inserted, {} unchanged, {} conflicts",
                outcome.received,
                outcome.inserted,
                outcome.unchanged,
                outcome.conflicts.len()
            ),
            SAME_VERSION,
        ),
        // daprd sends the status before it copies the body, and cannot take it back when
        // the copy fails (the other sidecar stopped): an answer cut short may pass later.
        Err(error) if error.is_eof() => ChunkOutcome::RetryLater {
            reason: format!("the answer ({status}) was cut short: {error}"),
        },
        Err(error) => cannot_send(
            format!(
                "order-processor answered {status} with a body batch cannot read ({error}): {}",
                excerpt(&String::from_utf8_lossy(body))
            ),
            SAME_VERSION,
        ),
    }
}

fn cannot_send(reason: String, what_to_change: &str) -> ChunkOutcome {
    ChunkOutcome::CannotSend {
        reason,
        what_to_change: what_to_change.to_owned(),
    }
}

/// An error answer, in whichever shape it came.
struct Refusal {
    who: &'static str,
    code: Option<String>,
    message: String,
    details: Option<Vec<OrderError>>,
}

impl Refusal {
    fn read(body: &[u8]) -> Self {
        /// order-processor's `{"error":{…}}` or daprd's `{"errorCode","message"}`.
        #[derive(Deserialize)]
        struct Shape {
            error: Option<Ours>,
            #[serde(rename = "errorCode")]
            error_code: Option<String>,
            message: Option<String>,
        }
        #[derive(Deserialize)]
        struct Ours {
            code: String,
            message: String,
            details: Option<serde_json::Value>,
        }
        match serde_json::from_slice::<Shape>(body) {
            Ok(Shape {
                error: Some(ours), ..
            }) => Self {
                who: "order-processor",
                details: match ours.details {
                    None => Some(Vec::new()),
                    Some(details) => serde_json::from_value(details).ok(),
                },
                code: Some(ours.code),
                message: excerpt(&ours.message),
            },
            Ok(Shape {
                error_code: Some(code),
                message,
                ..
            }) => Self {
                who: "the Dapr sidecar",
                message: excerpt(&format!("{code}: {}", message.unwrap_or_default())),
                code: Some(code),
                details: None,
            },
            _ => Self {
                who: "the sidecar or order-processor",
                code: None,
                message: excerpt(&String::from_utf8_lossy(body)),
                details: None,
            },
        }
    }
}

/// The start of `text`, for a reason that stays readable.
fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut short: String = chars.by_ref().take(MAX_MESSAGE_CHARS).collect();
    if chars.next().is_some() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> ChunkOutcome {
        decide(
            3,
            Reply::Answered {
                status: StatusCode::from_u16(status).unwrap(),
                body: Bytes::from(body.to_owned()),
            },
        )
    }

    fn ours(code: &str, message: &str) -> String {
        serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
    }

    fn what_to_change(outcome: &ChunkOutcome) -> &str {
        match outcome {
            ChunkOutcome::CannotSend { what_to_change, .. } => what_to_change,
            other => panic!("expected CannotSend, got {other:?}"),
        }
    }

    #[test]
    fn a_2xx_whose_counts_add_up_is_stored() {
        let outcome = answer(
            200,
            r#"{"received":3,"inserted":1,"unchanged":1,"conflicts":[9]}"#,
        );
        assert_eq!(
            outcome,
            ChunkOutcome::Stored {
                inserted: 1,
                unchanged: 1,
                conflicts: vec![9]
            }
        );
    }

    #[test]
    fn a_2xx_that_cannot_be_read_or_does_not_add_up_cannot_be_sent_not_a_transport_failure() {
        for body in [
            "OK",
            r#"{"received":3}"#,
            r#"{"received":2,"inserted":2,"unchanged":0,"conflicts":[]}"#,
        ] {
            assert_eq!(what_to_change(&answer(200, body)), SAME_VERSION, "{body}");
        }
    }

    #[test]
    fn a_2xx_cut_short_may_pass_later() {
        for body in ["", r#"{"received":3,"ins"#] {
            assert!(
                matches!(answer(200, body), ChunkOutcome::RetryLater { .. }),
                "{body:?}"
            );
        }
    }

    #[test]
    fn invalid_orders_are_invalid_with_their_details() {
        let body = serde_json::json!({ "error": {
            "code": "invalid_orders", "message": "1 order is invalid; nothing was stored",
            "details": [{ "index": 1, "orderid": 2, "field": "price", "reason": "must not be negative" }],
        }});
        let ChunkOutcome::Invalid { message, details } = answer(422, &body.to_string()) else {
            panic!("not invalid");
        };
        assert_eq!(message, "1 order is invalid; nothing was stored");
        assert_eq!(details[0].index, 1);
    }

    #[test]
    fn too_many_orders_and_too_large_bodies_are_split_never_rejected() {
        assert!(matches!(
            answer(400, &ours("too_many_orders", "at most 2 are accepted at once")),
            ChunkOutcome::TooLarge { limit: Limit::Orders, reason } if reason.contains("at most 2")
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
    }

    #[test]
    fn a_sidecar_refusing_the_binding_cannot_send_and_says_what_to_change() {
        let outcome = answer(
            500,
            &ours("binding_forbidden", "the binding refused the call"),
        );
        assert!(what_to_change(&outcome).contains("scoped to order-processor"));
    }

    #[test]
    fn failures_that_may_pass_are_retried_later() {
        for (status, body) in [
            (503, ours("unavailable", "storage is unavailable")),
            (500, ours("internal", "x")),
            (502, String::new()),
            (429, String::new()),
            (408, String::new()),
        ] {
            assert!(
                matches!(answer(status, &body), ChunkOutcome::RetryLater { .. }),
                "{status}"
            );
        }
        assert!(matches!(
            decide(1, Reply::NoAnswer("connection refused".into())),
            ChunkOutcome::RetryLater { reason } if reason.contains("connection refused")
        ));
    }

    #[test]
    fn other_refusals_cannot_be_sent_with_the_sidecars_own_message() {
        let daprd = |code: &str| {
            serde_json::json!({ "errorCode": code, "message": "failed to invoke, id: order-processor" })
                .to_string()
        };
        let outcome = answer(404, &daprd("ERR_DIRECT_INVOKE"));
        let ChunkOutcome::CannotSend { reason, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            reason.starts_with(
                "the Dapr sidecar answered 404 Not Found: ERR_DIRECT_INVOKE: failed to invoke"
            ),
            "{reason}"
        );
        assert!(what_to_change(&outcome).contains("TARGET_APP_ID"));
        assert!(
            what_to_change(&answer(401, &daprd("ERR_UNAUTHORIZED"))).contains("DAPR_API_TOKEN")
        );
        assert!(what_to_change(&answer(413, &daprd("ERR_BODY_TOO_LARGE"))).contains("CHUNK_BYTES"));
        for message in [
            "failed to invoke, id: order-processor, err: error sending message: rpc error: \
             code = ResourceExhausted desc = trying to send message larger than max (754 vs. 512)",
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
        let down =
            serde_json::json!({"errorCode": "ERR_DIRECT_INVOKE", "message": "connection refused"});
        assert!(matches!(
            answer(500, &down.to_string()),
            ChunkOutcome::RetryLater { .. }
        ));
        assert_eq!(
            what_to_change(&answer(400, &ours("malformed_body", "not JSON"))),
            SAME_VERSION
        );
        assert_eq!(
            what_to_change(&answer(422, &ours("other", "x"))),
            SAME_VERSION
        );
        assert_eq!(what_to_change(&answer(302, "")), SAME_VERSION);
    }

    #[test]
    fn a_long_message_is_cut_short() {
        let outcome = answer(400, &"x".repeat(5000));
        let ChunkOutcome::CannotSend { reason, .. } = outcome else {
            panic!("not cannot-send");
        };
        assert!(
            reason.chars().count() < MAX_MESSAGE_CHARS + 100,
            "{}",
            reason.len()
        );
        assert!(reason.ends_with('…'));
    }
}
