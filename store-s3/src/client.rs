//! Building the SDK client from what the operator gave: bucket, endpoint,
//! addressing style, region and credentials.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::Client;
use blocksnap::error::{Error, Result};

/// Whose credentials sign the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// The standard AWS chain (environment, profile, web identity, instance
    /// metadata); unsigned requests when it finds nothing. For commands
    /// that only read: a published snapshot needs no account.
    #[default]
    Auto,
    /// The standard AWS chain; no credentials is an error. For writes.
    Required,
    /// Unsigned requests: reading a public bucket.
    Anonymous,
}

#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix of the repository's objects (a `/` is put after it).
    pub prefix: String,
    /// An S3-compatible service's URL (MinIO, Ceph, R2, Garage…); AWS when
    /// absent.
    pub endpoint: Option<String>,
    /// `bucket` in the path rather than the host name. `None`: path style
    /// exactly when a custom endpoint is given, which is what most
    /// S3-compatible services expect.
    pub path_style: Option<bool>,
    /// The region; from the environment or profile when absent, and
    /// `us-east-1` when they have none either.
    pub region: Option<String>,
    pub auth: Auth,
    /// An explicit access key and secret, for callers that hold their own
    /// (tests, a secrets manager); `None`: the standard chain.
    pub credentials: Option<(String, String)>,
    /// Requests in flight (0: [`crate::DEFAULT_PARALLELISM`]).
    pub parallelism: usize,
    /// Attempts per request (0: the default, 8).
    pub max_attempts: u32,
}

impl S3Options {
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Returns the client and whether it sends unsigned requests.
pub(crate) async fn build(opts: &S3Options) -> Result<(Client, bool)> {
    let fail = |reason: String| Error::Store {
        op: "connect to",
        key: opts.url(),
        cause: std::io::Error::other(reason),
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if opts.auth == Auth::Anonymous {
        loader = loader.no_credentials();
    } else if let Some((key, secret)) = &opts.credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            key.clone(),
            secret.clone(),
            None,
            None,
            "blocksnap",
        ));
    }
    let mut shared = loader.load().await;
    let mut anonymous = opts.auth == Auth::Anonymous;
    if !anonymous {
        use aws_credential_types::provider::ProvideCredentials;
        let found = match shared.credentials_provider() {
            Some(p) => p.provide_credentials().await.map(|_| ()),
            None => Err(
                aws_credential_types::provider::error::CredentialsError::not_loaded(
                    "no credentials provider",
                ),
            ),
        };
        if let Err(e) = found {
            match opts.auth {
                Auth::Required => {
                    return Err(fail(format!(
                        "no AWS credentials found ({}): set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where a role is attached",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )))
                }
                _ => {
                    let mut reload =
                        aws_config::defaults(BehaviorVersion::latest()).no_credentials();
                    if let Some(region) = &opts.region {
                        reload = reload.region(Region::new(region.clone()));
                    }
                    shared = reload.load().await;
                    anonymous = true;
                }
            }
        }
    }

    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        // Retries are this crate's (see `retry`), counted and also covering
        // bodies cut short.
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        )
        // Every chunk is checked against its BLAKE3 name anyway, and many
        // S3-compatible servers reject the SDK's newer default checksum
        // trailers.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if shared.region().is_none() {
        config = config.region(Region::new("us-east-1"));
    }
    if let Some(endpoint) = &opts.endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(fail(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
        config = config.endpoint_url(endpoint.trim_end_matches('/'));
    }
    config = config.force_path_style(opts.path_style.unwrap_or(opts.endpoint.is_some()));
    Ok((Client::from_conf(config.build()), anonymous))
}
