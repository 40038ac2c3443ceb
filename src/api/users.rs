//! The seat routes of the local API: users, profiles, add-ons, bulk import,
//! entitlement checks, seat summary, audit.

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::auth::Peer;
use super::error::{self as errors, ApiError, Code};
use super::server::{error, fail, json, parse, respond_error, Resp, Route};
use crate::daemon::agent::users::{BulkError, UsersExport};
use crate::daemon::agent::Agent;
use crate::seats::{NewUser, Op, UserQuery, UserUpdate};
use crate::store::AuditQuery;

/// `PUT /v1/users/{id}/profile`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileBody {
    pub profile: String,
}

/// `POST /v1/users/{id}/addons`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddonBody {
    pub code: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: String,
}

/// The query string, decoded.
#[derive(Clone, Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Form-style: `+` is a space, `%XX` a byte; the result must be UTF-8.
    pub fn parse(q: &str) -> Result<Query, String> {
        let decode = |s: &str| {
            let plus = s.replace('+', " ");
            percent_decode(&plus)
                .map_err(|_| format!("the query string {q:?} is not UTF-8 once decoded"))
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Ok((decode(k)?, decode(v)?))
            })
            .collect::<Result<_, _>>()
            .map(Query)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("the query parameter {key}={v:?} is not a number")),
        }
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some("true" | "1" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "no") => Ok(Some(false)),
            Some(v) => Err(format!(
                "the query parameter {key}={v:?} is not true or false"
            )),
        }
    }
}

/// `%XX` decoding of a path segment (`+` is a plus there); `Err` when the
/// bytes are not UTF-8. Malformed escapes stay as they are.
pub fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
}

/// `POST /v1/entitlements`: many checks in one request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitlementsBody {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub extensions: Vec<String>,
}

/// The answer: one result per asked id, then per asked extension, in the
/// order asked. An unknown one carries `error` instead of `user`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitlementsAnswer {
    pub results: Vec<EntitlementResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitlementResult {
    /// What was asked: `{"user": id}` or `{"extension": ext}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<crate::seats::UserReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// Most checks in one batch.
pub const MAX_BATCH: usize = 10_000;

pub(super) fn handle(
    agent: &Agent,
    method: &Method,
    route: Route,
    query: &Query,
    body: &[u8],
    peer: Peer,
) -> Resp {
    match run(agent, method, route, query, body, peer) {
        Ok(resp) => resp,
        Err(msg) => error(StatusCode::BAD_REQUEST, Code::BadRequest, &msg),
    }
}

fn run(
    agent: &Agent,
    method: &Method,
    route: Route,
    query: &Query,
    body: &[u8],
    peer: Peer,
) -> Result<Resp, String> {
    let uid = peer.uid;
    let change = |op: Op| match agent.change_users(op, uid) {
        Ok(Some(user)) => json(StatusCode::OK, &user),
        Ok(None) => json(StatusCode::OK, &serde_json::Value::Null),
        Err(e) => fail(errors::seat(&e), &e),
    };
    Ok(match (route, method) {
        (Route::Users, &Method::GET) => {
            for key in ["profile", "addon"] {
                if let Some(code) = query.get(key) {
                    if !agent.knows_code(code) {
                        return Ok(error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            Code::UnknownCode,
                            &format!(
                                "there is no {key} '{code}' in the license, and no user holds it"
                            ),
                        ));
                    }
                }
            }
            let q = UserQuery {
                profile: query.get("profile").map(str::to_string),
                addon: query.get("addon").map(str::to_string),
                text: query.get("q").map(str::to_string),
                licensed: query.flag("licensed")?,
                offset: query.number("offset")?.unwrap_or(0),
                limit: query.number("limit")?.unwrap_or(0),
            };
            json(StatusCode::OK, &agent.search_users(&q))
        }
        (Route::Users, _) => {
            let user: NewUser = parse(body)?;
            change(Op::Create(user))
        }
        (Route::User(id), &Method::GET) => match agent.entitlement(Some(&id), None) {
            Some(u) => json(StatusCode::OK, &u),
            None => error(
                StatusCode::NOT_FOUND,
                Code::UnknownUser,
                &format!("there is no user '{id}'"),
            ),
        },
        (Route::User(id), &Method::PATCH) => {
            let update: UserUpdate = parse(body)?;
            change(Op::Update { id, update })
        }
        (Route::User(id), _) => match agent.change_users(Op::Delete { id: id.clone() }, uid) {
            Ok(_) => json(StatusCode::OK, &Deleted { deleted: id }),
            Err(e) => fail(errors::seat(&e), &e),
        },
        (Route::UserProfile(id), &Method::PUT) => {
            let b: ProfileBody = parse(body)?;
            change(Op::Assign {
                id,
                profile: b.profile,
            })
        }
        (Route::UserProfile(id), _) => change(Op::Unassign { id }),
        (Route::UserAddons(id), _) => {
            let b: AddonBody = parse(body)?;
            change(Op::AddAddon { id, code: b.code })
        }
        (Route::UserAddon(id, code), _) => change(Op::RemoveAddon { id, code }),
        (Route::UsersImport, _) => {
            let dry_run = query.flag("dry_run")?.unwrap_or(false);
            match agent.import_users(body, dry_run, uid) {
                Ok(preview) => json(StatusCode::OK, &preview),
                Err(BulkError::Import(e)) => {
                    let mut err = ApiError::new(Code::CsvInvalid, e.to_string());
                    err.rows = e.rows().to_vec();
                    respond_error(StatusCode::UNPROCESSABLE_ENTITY, err)
                }
                Err(BulkError::Seat(e)) => fail(errors::seat(&e), &e),
            }
        }
        (Route::Entitlement, _) => {
            let user = query.get("user");
            let ext = query.get("extension");
            if user.is_none() && ext.is_none() {
                return Err("give ?user=ID or ?extension=EXT".into());
            }
            match agent.entitlement(user, ext) {
                Some(u) => json(StatusCode::OK, &u),
                None => error(
                    StatusCode::NOT_FOUND,
                    Code::UnknownUser,
                    &match (user, ext) {
                        (Some(id), _) => format!("there is no user '{id}'"),
                        (None, Some(e)) => format!("no user has extension {e}"),
                        _ => "no such user".into(),
                    },
                ),
            }
        }
        (Route::Entitlements, _) => {
            let asked: EntitlementsBody = parse(body)?;
            let n = asked.users.len() + asked.extensions.len();
            if n > MAX_BATCH {
                return Err(format!(
                    "{n} checks in one batch; at most {MAX_BATCH} (send several batches)"
                ));
            }
            let found = agent.entitlements(&asked.users, &asked.extensions);
            let asked_ids = asked.users.into_iter().map(|id| (Some(id), None));
            let asked_exts = asked.extensions.into_iter().map(|e| (None, Some(e)));
            let results = asked_ids
                .chain(asked_exts)
                .zip(found)
                .map(|((user_id, extension), report)| {
                    let error = report.is_none().then(|| {
                        let message = match (&user_id, &extension) {
                            (Some(id), _) => format!("there is no user '{id}'"),
                            (_, Some(e)) => format!("no user has extension {e}"),
                            _ => "no such user".to_string(),
                        };
                        ApiError::new(Code::UnknownUser, message)
                    });
                    EntitlementResult {
                        user_id,
                        extension,
                        entitlement: report,
                        error,
                    }
                })
                .collect();
            json(StatusCode::OK, &EntitlementsAnswer { results })
        }
        (Route::Seats, _) => json(StatusCode::OK, &agent.seat_summary()),
        (Route::Audit, _) => {
            let q = AuditQuery {
                user_id: query.get("user").map(str::to_string),
                code: query.get("code").map(str::to_string),
                before_id: query.number("before")?,
                limit: query.number("limit")?.unwrap_or(0),
            };
            match agent.audit(&q) {
                Ok(rows) => json(StatusCode::OK, &rows),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    &e.to_string(),
                ),
            }
        }
        (Route::Export, _) => match agent.export_users() {
            Ok(x) => json(StatusCode::OK, &x),
            Err(e) => fail(errors::restore(&e), &e),
        },
        (Route::Restore, _) => {
            let export: UsersExport = parse(body)?;
            match agent.restore_users(export, uid) {
                Ok(n) => json(StatusCode::OK, &Restored { restored: n }),
                Err(e) => fail(errors::restore(&e), &e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, Code::NotFound, "no such API path"),
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub restored: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let q = Query::parse("q=Ann%20Smith&profile=premium&x=a+b&bad=%zz&e=").unwrap();
        assert_eq!(q.get("q"), Some("Ann Smith"));
        assert_eq!(q.get("profile"), Some("premium"));
        assert_eq!(q.get("x"), Some("a b"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.get("e"), Some(""));
        assert_eq!(q.get("none"), None);
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
        assert_eq!(percent_decode("100%").unwrap(), "100%");
        // In a path a plus is a plus; invalid UTF-8 is refused, not mangled.
        assert_eq!(percent_decode("a+b").unwrap(), "a+b");
        assert!(percent_decode("%FF%FE").is_err());
        assert!(Query::parse("q=%FF").is_err());
    }

    #[test]
    fn bad_numbers_and_flags_are_named() {
        let q = Query::parse("limit=ten&licensed=maybe").unwrap();
        assert!(q.number::<usize>("limit").unwrap_err().contains("limit"));
        assert!(q.flag("licensed").unwrap_err().contains("licensed"));
    }
}
