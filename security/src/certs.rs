//! Throwaway certificates for `paygrid dev` and tests (rcgen): a CA, the node
//! certificate servers present (for `localhost`, `127.0.0.1` and `::1`), and one client
//! certificate per name, whose common name is the identity the control unit sees.
//! Production certificates come from the operator's own CA; see docs/security.md.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("generate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "a client may not be named `{0}`: it is the name of the servers' certificate, which members of a cluster trust to forward calls"
    )]
    ReservedName(String),
}

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<(), CertsError> {
    let path = dir.join(name);
    let io = |source| CertsError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(&path, text).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

fn ca_params() -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Paygrid development CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Creates `dir` with a new CA (`ca.crt`, `ca.key`), `node.crt`/`node.key`, and
/// `client.NAME.crt`/`.key` for each of `clients`.
pub fn create(dir: &Path, clients: &[&str]) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let ca_key = KeyPair::generate()?;
    let ca = ca_params()?.self_signed(&ca_key)?;
    write(dir, "ca.crt", &ca.pem(), false)?;
    write(dir, "ca.key", &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    node(dir, &issuer)?;
    for name in clients {
        client(dir, &issuer, name)?;
    }
    Ok(())
}

/// Adds `client.NAME.crt`/`.key` signed by the CA in `dir` (its `ca.key`).
pub fn add_client(dir: &Path, name: &str) -> Result<(), CertsError> {
    let path = dir.join("ca.key");
    let text = std::fs::read_to_string(&path).map_err(|source| CertsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&text)?);
    client(dir, &issuer, name)
}

/// A new node certificate and key signed by the CA in `dir` (its `ca.key`), replacing
/// `node.crt`/`node.key`: what a certificate rotation writes.
pub fn renew_node(dir: &Path) -> Result<(), CertsError> {
    let path = dir.join("ca.key");
    let text = std::fs::read_to_string(&path).map_err(|source| CertsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    node(dir, &Issuer::new(ca_params()?, KeyPair::from_pem(&text)?))
}

fn node(dir: &Path, issuer: &Issuer<'_, KeyPair>) -> Result<(), CertsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params.subject_alt_names.extend([
        SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    ]);
    params.distinguished_name.push(DnType::CommonName, "node");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, issuer)?;
    write(dir, "node.crt", &cert.pem(), false)?;
    write(dir, "node.key", &key.serialize_pem(), true)
}

fn client(dir: &Path, issuer: &Issuer<'_, KeyPair>, name: &str) -> Result<(), CertsError> {
    if name == crate::policy::NODE_IDENTITY {
        return Err(CertsError::ReservedName(name.to_owned()));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    write(dir, &format!("client.{name}.crt"), &cert.pem(), false)?;
    write(
        dir,
        &format!("client.{name}.key"),
        &key.serialize_pem(),
        true,
    )
}
