//! One HTTP exchange: its request and response as they are read, and the [`LlmCall`] they
//! make once both are done (or the connection or recording ends).

use modelprobe_recording::llm::{LlmCall, LlmError};

use crate::{
    body::{Body, JsonBuf},
    cost,
    http::{Framing, Head},
    io::{self, Capped},
    provider::{self, Api, Reply},
    Options,
};

/// What an exchange turned out to be.
pub(crate) enum Outcome {
    /// An LLM call.
    Call(Box<LlmCall>),
    /// Another HTTP request.
    Other,
    /// A request whose head was lost: not parsed.
    Lost,
}

/// One request and its response.
pub(crate) struct Exchange {
    call: LlmCall,
    /// The API, for a request that may be an LLM call.
    api: Option<Api>,
    anthropic_headers: bool,
    json_content_type: bool,
    /// A placeholder for a request that could not be parsed, so its response pairs with it.
    lost: bool,
    request: Option<Body>,
    /// The request was read to its end (or given up on).
    pub request_done: bool,
    response: Option<Body>,
    /// The response's head was read (or its start lost).
    pub response_started: bool,
    /// The response was read to its end (or given up on).
    pub response_done: bool,
    /// `HEAD` request: its response has no body.
    head_method: bool,
    reply: Reply,
    timing: Timing,
}

/// When the content events of a stream arrived.
#[derive(Debug, Default)]
struct Timing {
    first_ns: u64,
    last_ns: u64,
    gaps: u64,
    sum_ns: u64,
    max_ns: u64,
}

impl Timing {
    fn content(&mut self, now_ns: u64) {
        if self.first_ns == 0 {
            self.first_ns = now_ns;
        } else {
            let gap = now_ns.saturating_sub(self.last_ns);
            self.gaps += 1;
            self.sum_ns += gap;
            self.max_ns = self.max_ns.max(gap);
        }
        self.last_ns = now_ns;
    }
}

impl Exchange {
    /// A request whose head was read.
    pub fn request(head: &Head, started_ns: u64, call: LlmCall) -> Exchange {
        let path = head.target.split(['?', '#']).next().unwrap_or_default();
        let api = Api::from_path(path).filter(|_| head.method == "POST");
        let host = head.header("host").unwrap_or_default();
        let anthropic_headers =
            head.header("anthropic-version").is_some() || head.header("x-api-key").is_some();
        let mut call = LlmCall {
            start_ns: started_ns,
            host: host.to_owned(),
            method: head.method.clone(),
            path: path.to_owned(),
            ..call
        };
        if let Some(api) = api {
            call.endpoint = api.endpoint().to_owned();
            call.provider = provider::provider(host, api, anthropic_headers).to_owned();
        }
        Exchange {
            api,
            anthropic_headers,
            json_content_type: head
                .header("content-type")
                .is_some_and(|t| t.to_ascii_lowercase().contains("json")),
            lost: false,
            request: api.map(|_| Body::new(head.header("content-encoding"), None)),
            request_done: false,
            response: None,
            response_started: false,
            response_done: false,
            head_method: head.method == "HEAD",
            reply: Reply::default(),
            timing: Timing::default(),
            call,
        }
    }

    /// True when this exchange is certainly no LLM call, whatever is read of it from now on:
    /// its request was lost, its method or path is no LLM API's, or its request body, read to
    /// its end, is not JSON.
    pub fn certainly_not_llm(&self) -> bool {
        let not_json = || {
            let json = self.request.as_ref().and_then(Body::json);
            !self.json_content_type && !json.is_some_and(starts_like_json)
        };
        self.lost || self.api.is_none() || (self.request_done && not_json())
    }

    /// A request that could not be parsed.
    pub fn lost() -> Exchange {
        Exchange {
            lost: true,
            request_done: true,
            ..Exchange::request(&Head::default(), 0, LlmCall::default())
        }
    }

    /// Request body bytes.
    pub fn request_body(&mut self, bytes: &[u8]) {
        if let Some(body) = &mut self.request {
            body.feed(bytes, &mut |_| {});
        }
    }

    /// Bytes missing from the request body (or from the rest of the request, when `lost`).
    pub fn request_gap(&mut self) {
        self.call.incomplete = true;
        if let Some(body) = &mut self.request {
            body.gap();
        }
    }

    /// A response's head (not a 1xx): returns how its body is framed.
    pub fn response_head(&mut self, head: &Head, started_ns: u64, options: &Options) -> Framing {
        self.response_started = true;
        self.call.status = head.status;
        self.call.first_byte_ns = started_ns;
        if matches!(head.status, 429 | 503) {
            let retry_after = head
                .header("retry-after-ms")
                .and_then(|ms| ms.trim().parse::<f64>().ok())
                .map(|ms| ms / 1000.0)
                .or_else(|| head.header("retry-after")?.trim().parse().ok());
            if let Some(seconds) = retry_after.filter(|s: &f64| s.is_finite() && *s >= 0.0) {
                self.error().retry_after_s = Some(seconds);
            }
        }
        if head.status >= 400 {
            self.error();
        }
        if self.api.is_some() {
            let body = Body::new(head.header("content-encoding"), head.header("content-type"));
            self.response = Some(body);
            if options.capture_io {
                self.reply.completion = Some(Capped::new(options.io_cap_bytes));
            }
        }
        if self.head_method || matches!(head.status, 204 | 304) {
            Framing::Empty
        } else {
            head.body_framing()
        }
    }

    fn error(&mut self) -> &mut LlmError {
        self.reply.error.get_or_insert_with(LlmError::default)
    }

    /// Response body bytes, read at `now_ns`.
    pub fn response_body(&mut self, bytes: &[u8], now_ns: u64) {
        let (Some(body), Some(api)) = (&mut self.response, self.api) else {
            return;
        };
        let mut events = Vec::new();
        body.feed(bytes, &mut |event| events.push(event));
        self.read_events(api, events, now_ns);
    }

    fn read_events(&mut self, api: Api, events: Vec<crate::sse::Event>, now_ns: u64) {
        for event in events {
            self.call.stream_events += 1;
            // A new error replaces the bare one a status made, keeping its retry-after.
            let retry_after = self.reply.error.as_ref().and_then(|e| e.retry_after_s);
            if self.reply.read_event(api, &event) {
                self.timing.content(now_ns);
            }
            if let Some(error) = &mut self.reply.error {
                error.retry_after_s = error.retry_after_s.or(retry_after);
            }
        }
    }

    /// Bytes missing from the response body.
    pub fn response_gap(&mut self) {
        self.call.incomplete = true;
        if let Some(body) = &mut self.response {
            body.gap();
        }
    }

    /// The response ended at `now_ns` (`cut`: its end was lost).
    pub fn response_end(&mut self, now_ns: u64, cut: bool) {
        self.response_started = true;
        self.response_done = true;
        self.call.incomplete |= cut;
        self.call.end_ns = now_ns;
        self.read_response(now_ns);
    }

    /// Reads what the response body said, once it is over.
    fn read_response(&mut self, now_ns: u64) {
        let (Some(mut body), Some(api)) = (self.response.take(), self.api) else {
            return;
        };
        let mut events = Vec::new();
        body.finish(&mut |event| events.push(event));
        self.read_events(api, events, now_ns);
        self.call.body_not_decoded = body.undecodable();
        if let Some(json) = body.json() {
            let retry_after = self.reply.error.as_ref().and_then(|e| e.retry_after_s);
            self.reply.read_body(api, &json.value_or_salvage());
            if let Some(error) = &mut self.reply.error {
                error.retry_after_s = error.retry_after_s.or(retry_after);
            }
            if (200..300).contains(&self.call.status) && json.is_whole() {
                self.timing.first_ns = now_ns;
            }
        } else {
            self.call.usage_missing = self.reply.usage.is_none();
        }
    }

    /// The call this exchange made, ending at `end_ns` if its response never did.
    pub fn finish(mut self, end_ns: u64, options: &Options) -> Outcome {
        if self.lost {
            return Outcome::Lost;
        }
        let (Some(api), Some(request)) = (self.api, self.request.take()) else {
            return Outcome::Other;
        };
        let Some(json) = request.json() else {
            return Outcome::Other;
        };
        let body = json.value_or_salvage();
        provider::read_request(&body, &mut self.call);
        let anthropic_shape = self.anthropic_headers || self.call.provider == "anthropic";
        let is_llm = (self.json_content_type || starts_like_json(json))
            && (api != Api::Messages || anthropic_shape || !self.call.model.is_empty());
        if !is_llm {
            return Outcome::Other;
        }
        if self.call.model.is_empty() {
            self.call.model = azure_deployment(&self.call.path).unwrap_or_default();
        }
        if !self.response_done {
            // Cut by the connection's or the recording's end: its answer was not all seen.
            self.call.end_ns = end_ns;
            self.call.incomplete = true;
            self.read_response(end_ns);
        }
        let mut call = self.call;
        let reply = self.reply;
        call.response_id = reply.id;
        if !reply.model.is_empty() && reply.model != call.model {
            call.response_model = reply.model;
        }
        call.finish_reason = reply.finish_reason;
        call.usage = reply.usage;
        call.error = reply.error;
        call.first_token_ns = self.timing.first_ns;
        call.max_inter_chunk_ns = self.timing.max_ns;
        call.mean_inter_chunk_ns = self
            .timing
            .sum_ns
            .checked_div(self.timing.gaps)
            .unwrap_or(0);
        if let Some(provider_cost) = reply.provider_cost {
            call.cost_usd = Some(provider_cost);
            call.cost_source = "provider".to_owned();
        } else if let (Some(usage), Some((price, source))) =
            (&call.usage, options.prices.price(&call.model))
        {
            let convention = if api == Api::Messages {
                "anthropic"
            } else {
                &call.provider
            };
            call.cost_usd = Some(cost(convention, usage, price));
            call.cost_source = source.as_str().to_owned();
        }
        if options.capture_io {
            let request = Capped::of_bytes(json.head(), json.len(), options.io_cap_bytes);
            let completion = reply
                .completion
                .unwrap_or_else(|| Capped::new(options.io_cap_bytes));
            call.io = Some(io::capture(request, completion, &options.redact));
        }
        Outcome::Call(Box::new(call))
    }
}

/// True when a body's first byte that is not white space opens a JSON object.
fn starts_like_json(json: &JsonBuf) -> bool {
    json.head().iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The deployment of an Azure OpenAI path (`/openai/deployments/NAME/chat/completions`),
/// which names the model when the body does not.
fn azure_deployment(path: &str) -> Option<String> {
    let rest = path.split_once("/deployments/")?.1;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}
