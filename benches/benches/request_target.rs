//! What reading a request the API server's way and forwarding its canonical form cost:
//! the old raw split of the path (for comparison), the Go-faithful read, the canonical
//! target, and the filter's `:path` rewrite (which is part of `inject stage` in the
//! `filter` bench; here alone).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kubegate_authz_server::request_info::KubeRequest;
use kubegate_benches::header_lines::HeaderLines as Lines;
use kubegate_wasm_filter::headers::HeaderMap;

const TARGETS: [(&str, &str); 3] = [
    ("kubectl get pods", "/api/v1/namespaces/default/pods?limit=500"),
    (
        "kubectl exec",
        "/api/v1/namespaces/default/pods/web-1/exec?command=sh&command=-c&command=echo+hi&container=app&stdin=true&stdout=true&tty=true",
    ),
    ("encoded namespace", "/api/v1/namespaces/kube%2Dsystem/configmaps/victim"),
];

fn request_target(c: &mut Criterion) {
    for (label, raw) in TARGETS {
        c.bench_function(&format!("raw split (before), {label}"), |b| {
            b.iter(|| black_box(raw).split_once('?').map(|(p, _)| p.split('/').count()))
        });
        c.bench_function(&format!("read as kube-apiserver, {label}"), |b| {
            b.iter(|| KubeRequest::read("GET", black_box(raw)))
        });
        let Ok(read) = KubeRequest::read("GET", raw) else { panic!("{raw} is refused") };
        c.bench_function(&format!("canonical target, {label}"), |b| b.iter(|| black_box(&read).canonical_target()));
    }
    let headers = Lines(vec![(":path".into(), TARGETS[0].1.into()), (":method".into(), "GET".into())]);
    c.bench_function("filter :path rewrite", |b| {
        b.iter(|| {
            let mut h = headers.clone();
            h.set(":path", black_box(TARGETS[0].1));
            h
        })
    });
}

criterion_group!(benches, request_target);
criterion_main!(benches);
