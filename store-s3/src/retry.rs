//! Which S3 failures are worth another attempt, and the attempt loop.
//!
//! Transient: 5xx (except 501), 429 and throttling codes, 408 and
//! `RequestTimeout`, 409 `ConditionalRequestConflict` (a concurrent
//! conditional write), timeouts, connection failures and bodies cut short.
//! Everything else — 403, 400, a missing bucket, a wrong region — fails at
//! once with the server's code and message, because retrying cannot fix it.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::ATTEMPT_TIMEOUT;

/// Attempts per request; with the backoff below, about 16 s of retrying
/// before a request is given up on.
pub(crate) const MAX_ATTEMPTS: u32 = 8;
const BASE_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// What one attempt came to.
pub(crate) enum Attempt<T> {
    Done(T),
    Missing,
    Retry(String),
    Fail(String),
}

/// Why a request did not succeed.
pub(crate) enum Failure {
    Missing,
    Permanent { message: String, attempts: u32 },
    GaveUp { message: String, attempts: u32 },
}

pub(crate) enum Class {
    Missing,
    PreconditionFailed,
    NotImplemented,
    Transient(String),
    Permanent(String),
}

impl Class {
    /// The attempt outcome for a failure the caller has no special use for.
    pub(crate) fn into_attempt<T>(self) -> Attempt<T> {
        match self {
            Class::Missing => Attempt::Missing,
            Class::Transient(m) => Attempt::Retry(m),
            Class::Permanent(m) => Attempt::Fail(m),
            Class::PreconditionFailed => Attempt::Fail("412 PreconditionFailed".into()),
            Class::NotImplemented => Attempt::Fail("501 NotImplemented".into()),
        }
    }
}

pub(crate) fn classify<E>(e: &SdkError<E, HttpResponse>) -> Class
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = e.code().unwrap_or("");
            let message = e.message().unwrap_or("");
            let text = if message.is_empty() {
                format!("{status} {code}")
            } else {
                format!("{status} {code}: {message}")
            };
            match (status, code) {
                (_, "NoSuchBucket") => {
                    Class::Permanent(format!("{text} (the bucket does not exist)"))
                }
                (404, _) | (_, "NoSuchKey") => Class::Missing,
                (412, _) => Class::PreconditionFailed,
                (501, _) => Class::NotImplemented,
                (500..=599 | 429 | 408, _)
                | (_, "RequestTimeout" | "SlowDown" | "Throttling" | "ThrottlingException")
                | (_, "ConditionalRequestConflict" | "OperationAborted" | "InternalError")
                // The body arrived damaged (Content-MD5 or the signed
                // payload hash disagree): send it again.
                | (_, "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch") => {
                    Class::Transient(text)
                }
                (403, _) => Class::Permanent(format!(
                    "{text} (check the credentials, or use --anonymous for a public bucket)"
                )),
                (301, _) | (_, "PermanentRedirect" | "AuthorizationHeaderMalformed") => {
                    Class::Permanent(format!(
                        "{text} (the bucket is in another region: set --region or AWS_REGION)"
                    ))
                }
                _ => Class::Permanent(text),
            }
        }
        SdkError::ConstructionFailure(_) => Class::Permanent(format!("{}", DisplayErrorContext(e))),
        // Timeouts, refused or reset connections, responses cut short.
        _ => Class::Transient(format!("{}", DisplayErrorContext(e))),
    }
}

/// Runs `attempt(n)` for n = 1, 2, … until it is done, missing, fails
/// permanently, or [`MAX_ATTEMPTS`] have failed; waits with exponential
/// backoff and full jitter between attempts.
pub(crate) async fn run<T, F, Fut>(max_attempts: u32, mut attempt: F) -> Result<T, Failure>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let mut n = 1;
    loop {
        let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(n)).await {
            Ok(o) => o,
            Err(_) => Attempt::Retry(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
        };
        match outcome {
            Attempt::Done(t) => return Ok(t),
            Attempt::Missing => return Err(Failure::Missing),
            Attempt::Fail(message) => {
                return Err(Failure::Permanent {
                    message,
                    attempts: n,
                })
            }
            Attempt::Retry(message) if n >= max_attempts => {
                return Err(Failure::GaveUp {
                    message,
                    attempts: n,
                })
            }
            Attempt::Retry(message) => {
                let delay = backoff(n);
                tracing::debug!(
                    "attempt {n} failed ({message}); retrying in {} ms",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                n += 1;
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_DELAY
        .saturating_mul(1 << attempt.min(16).saturating_sub(1))
        .min(MAX_DELAY);
    let r = RandomState::new().hash_one(attempt) as u128;
    Duration::from_nanos((r % ceiling.as_nanos().max(1)) as u64)
}
