//! Signing in on Keycloak's own pages without a browser: a cookie store that follows
//! redirects and posts Keycloak's HTML forms, as a person's browser would.

use std::sync::Arc;

use reqwest::StatusCode;

/// A cookie-keeping HTTP client that fills in Keycloak's forms.
pub struct FormClient {
    client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
}

/// A page as the browser ended up showing it: status, address (after redirects) and HTML.
pub struct Page {
    pub status: StatusCode,
    pub url: String,
    pub html: String,
}

impl FormClient {
    /// A client that also trusts the CA in `ca_file` (Keycloak's https side), if given.
    pub fn new(ca_file: Option<&str>) -> FormClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let mut builder = reqwest::Client::builder().cookie_provider(jar.clone());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"));
        }
        FormClient {
            client: builder.build().expect("an HTTP client"),
            jar,
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        Page::read(self.client.get(url).send().await.expect("answers")).await
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        Page::read(self.client.post(url).form(form).send().await.expect("answers")).await
    }

    /// Signs in as `user` (password = user name) on the Keycloak login page `page`; returns
    /// where that leads.
    pub async fn log_in(&self, page: &Page, user: &str) -> Page {
        let (action, _) = page.form("id=\"kc-form-login\"");
        self.post(&action, &[("username", user), ("password", user)])
            .await
    }

    /// Submits the form on `page` whose tag contains `marker` with its hidden fields and `extra`.
    pub async fn submit(&self, page: &Page, marker: &str, extra: &[(&str, &str)]) -> Page {
        let (action, hidden) = page.form(marker);
        let mut fields: Vec<(&str, &str)> = hidden.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        fields.extend_from_slice(extra);
        self.post(&action, &fields).await
    }

    /// The cookies it holds for `url`, as a Cookie header.
    pub fn cookies(&self, url: &str) -> String {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&url.parse().expect("a URL"))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

impl Page {
    async fn read(response: reqwest::Response) -> Page {
        let (status, url) = (response.status(), response.url().to_string());
        let html = response.text().await.expect("a body");
        Page { status, url, html }
    }

    /// The form whose `<form ...>` tag contains `marker`: its action (absolute) and hidden fields.
    pub fn form(&self, marker: &str) -> (String, Vec<(String, String)>) {
        let tag_start = self
            .html
            .match_indices("<form")
            .map(|(at, _)| at)
            .find(|&at| {
                self.html[at..]
                    .split('>')
                    .next()
                    .unwrap_or_default()
                    .contains(marker)
            })
            .unwrap_or_else(|| {
                panic!(
                    "no form with {marker} on {} ({}): {}",
                    self.url, self.status, self.html
                )
            });
        let form = &self.html[tag_start..];
        let form = &form[..form.find("</form>").unwrap_or(form.len())];
        let tag = form.split('>').next().unwrap_or_default();
        let action = attribute(tag, "action").expect("a form action");
        let action = reqwest::Url::parse(&self.url)
            .and_then(|base| base.join(&action))
            .expect("an action URL")
            .to_string();
        let hidden = form
            .split("<input")
            .skip(1)
            .map(|input| input.split('>').next().unwrap_or_default())
            .filter(|input| input.contains("type=\"hidden\""))
            .filter_map(|input| {
                Some((
                    attribute(input, "name")?,
                    attribute(input, "value").unwrap_or_default(),
                ))
            })
            .collect();
        (action, hidden)
    }
}

/// The value of `name="..."` in an HTML tag, with `&amp;` decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].replace("&amp;", "&"))
}
