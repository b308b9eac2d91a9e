//! `--remote` and its companions, shared by the workbench, `generate` and `record`.

use std::path::PathBuf;

use clap::Args;

use crate::backend::chat::RemoteConfig;

#[derive(Debug, Clone, Default, Args)]
pub struct RemoteArgs {
    /// Chat with a model behind an OpenAI-compatible server instead of loading one: its `/v1`
    /// base URL (SGLang, vLLM, llama.cpp, Ollama, `thinkbench serve`, the DeepSeek or OpenAI API).
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// The model's name on the server (default: the first one `/v1/models` lists).
    #[arg(long, value_name = "NAME", requires = "remote")]
    pub remote_model: Option<String>,
    /// The environment variable that holds the server's API key (never a flag: flags show in
    /// `ps` and shell history).
    #[arg(long, value_name = "VAR", requires = "remote")]
    pub api_key_env: Option<String>,
    /// The served model's config.json: its layer count, MoE layers and top-k shape the routing a
    /// server returns (the published file alone is enough; no weights).
    #[arg(long, value_name = "CONFIG.json", requires = "remote")]
    pub remote_config: Option<PathBuf>,
    /// Ask for routing in non-streamed requests: vLLM returns routed experts only there (the
    /// reply then appears all at once).
    #[arg(long, requires = "remote")]
    pub remote_routing: bool,
}

impl RemoteArgs {
    pub fn config(&self) -> Option<RemoteConfig> {
        self.remote.as_ref().map(|url| RemoteConfig {
            url: url.clone(),
            model: self.remote_model.clone(),
            api_key_env: self.api_key_env.clone(),
            config: self.remote_config.clone(),
            routing_unstreamed: self.remote_routing,
        })
    }
}
