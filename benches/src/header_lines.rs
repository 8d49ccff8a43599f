//! A request's header lines as a plain list, for benchmarking the filter's rules natively
//! (the host's map behind the same `HeaderMap` trait; each read copies, as the host does).

use kubegate_wasm_filter::headers::HeaderMap;

#[derive(Clone, Debug, Default)]
pub struct HeaderLines(pub Vec<(String, String)>);

impl HeaderLines {
    pub fn of(pairs: &[(&str, &str)]) -> Self {
        Self(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }
}

impl HeaderMap for HeaderLines {
    fn lines(&self) -> Vec<(String, String)> {
        self.0.clone()
    }
    fn remove_all(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }
    fn add(&mut self, name: &str, value: &str) {
        self.0.push((name.to_owned(), value.to_owned()));
    }
    fn set(&mut self, name: &str, value: &str) {
        self.remove_all(name);
        self.add(name, value);
    }
}
