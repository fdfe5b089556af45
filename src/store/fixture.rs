//! The one `Action` the unit tests start from (tests only): the rules' tables, the
//! edge's tag checks and the operator's filters change the fields they are about with
//! struct update syntax, so a new field of `Action` is added here once.

use super::records::{Action, State};
use crate::policy::Kind;

impl Action {
    /// Action `q4/jane` of campaign `q4` on account `acct-1`: a `kind` to prospect
    /// `https://www.linkedin.com/in/jane`, in `state`, never attempted, payload `{}`.
    pub(crate) fn fixture(kind: Kind, state: State) -> Action {
        Action {
            id: "q4/jane".into(),
            campaign: "q4".into(),
            account: "acct-1".into(),
            kind,
            prospect: "https://www.linkedin.com/in/jane".into(),
            payload: "{}".into(),
            priority: 0,
            seq: 1,
            state,
            attempts: 0,
            retries: 0,
            reason: None,
            until_ms: None,
            updated_ms: 0,
            sent_day: None,
            accepted: false,
            refunded: false,
        }
    }
}
