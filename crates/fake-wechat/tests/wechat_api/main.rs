//! End-to-end tests of the fake WeChat over real HTTP, driven through `wxpush-wechat`'s client:
//! each WeChat rule the fake models, and each outcome class the client must classify.

mod common;
mod control_api;
mod faults;
mod lost_reply;
mod outage;
mod redaction;
mod subscribe;
mod template;
mod throughput;
mod tokens;
