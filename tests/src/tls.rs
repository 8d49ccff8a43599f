//! TLS material for local runs: one throwaway CA and the leaf certificates it signs,
//! and the rustls acceptor the stand-in serves with.

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Paths of a CA certificate and of leaves signed by it.
pub struct LocalPki {
    pub ca_cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A leaf certificate and its private key on disk.
pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl LocalPki {
    /// Creates a new CA in `dir` (`ca.crt`).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "kubegate local CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_cert = dir.join("ca.crt");
        std::fs::write(&ca_cert, cert.pem())?;
        Ok(Self { ca_cert, issuer: Issuer::new(params, key), dir: dir.to_owned() })
    }

    /// A server certificate for 127.0.0.1 and localhost, written as `<name>.crt/.key`.
    pub fn leaf(&self, name: &str) -> anyhow::Result<LeafFiles> {
        self.leaf_with_hosts(name, &[])
    }

    /// [`LocalPki::leaf`], also valid for the DNS names `hosts` (a gateway fronting
    /// clusters selected by host name).
    pub fn leaf_with_hosts(&self, name: &str, hosts: &[&str]) -> anyhow::Result<LeafFiles> {
        let mut names = vec!["localhost".to_string()];
        names.extend(hosts.iter().map(|h| h.to_string()));
        let mut params = CertificateParams::new(names)?;
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = LeafFiles { cert: self.dir.join(format!("{name}.crt")), key: self.dir.join(format!("{name}.key")) };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }

    /// A certificate for the public half of `key_pem` (PKCS#8), signed by this CA, as
    /// PEM: what an attacker holding a certificate from a CA the gateway trusts serves.
    pub fn certificate_for_key(&self, name: &str, key_pem: &str) -> anyhow::Result<String> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::from_pem(key_pem)?;
        Ok(params.signed_by(&key, &self.issuer)?.pem())
    }

    /// A client certificate with `CN=<user>` and `O=<group>` per group, the way
    /// kube-apiserver reads an identity from a certificate.
    pub fn client_leaf(&self, user: &str, groups: &[&str]) -> anyhow::Result<LeafFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params.distinguished_name.push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let name = user.replace([':', '/'], "-");
        let files = LeafFiles {
            cert: self.dir.join(format!("{name}.client.crt")),
            key: self.dir.join(format!("{name}.client.key")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}

/// The certificates of a PEM file, as a rustls root store.
pub fn root_store(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(ca)?)) {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// An HTTPS client builder that also trusts the CA in `ca` (the local PKI's).
pub fn https_client(ca: &Path) -> anyhow::Result<reqwest::ClientBuilder> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    Ok(reqwest::Client::builder().use_rustls_tls().add_root_certificate(ca))
}

/// A TLS acceptor offering HTTP/2 and HTTP/1.1; with `client_ca`, client certificates
/// signed by it are verified when presented (and optional, as on kube-apiserver).
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .with_context(|| format!("no private key in {}", key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(root_store(ca)?))
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
