//! `switchyard validate`'s account: every document's outcome, going on past a refused one.

use std::path::Path;

use super::parse::{Ignored, Parsed, describe, parse_resource, split_documents};
use super::{Config, ConfigError, config_files};
use crate::kinds::Resource;

/// What became of one document ([`Config::report`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Loaded, every field with its effect.
    Loaded,
    /// Loaded, with these fields ignored.
    LoadedIgnoring(Vec<Ignored>),
    /// Not a resource Switchyard runs: skipped.
    Skipped(Ignored),
    /// Refused.
    Refused(ConfigError),
}

/// `switchyard validate`'s account of a configuration: each document's outcome, and the
/// configuration of the documents that loaded (or why their references do not hold).
#[derive(Debug)]
pub struct Report {
    /// Per document: its file, `Kind namespace/name`, and what became of it.
    pub documents: Vec<(String, String, Outcome)>,
    /// The configuration of the loaded documents; an error when a document was refused (the
    /// first refusal) or their references do not hold.
    pub config: Result<Config, ConfigError>,
}

/// The documents of one file, each parsed on its own so that one refusal does not hide the
/// others: (`Kind namespace/name`, its outcome); a file that cannot be read or split into
/// documents is one refusal.
fn report_file(
    name: &str,
    text: Result<String, std::io::Error>,
) -> Vec<(String, Outcome, Option<Resource>)> {
    let values = text
        .map_err(|e| ConfigError {
            file: name.to_owned(),
            resource: None,
            field: None,
            message: format!("cannot read: {e}"),
        })
        .and_then(|text| split_documents(&text, name));
    let values = match values {
        Ok(v) => v,
        Err(e) => return vec![(String::new(), Outcome::Refused(e), None)],
    };
    values
        .into_iter()
        .map(|(i, v)| {
            let label = describe(&v, i);
            match parse_resource(v, name, i) {
                Ok(Parsed::Resource(r, ignored)) if ignored.is_empty() => {
                    (label, Outcome::Loaded, Some(r))
                }
                Ok(Parsed::Resource(r, ignored)) => {
                    (label, Outcome::LoadedIgnoring(ignored), Some(r))
                }
                Ok(Parsed::Skipped(why)) => (label, Outcome::Skipped(why), None),
                Err(e) => (label, Outcome::Refused(e), None),
            }
        })
        .collect()
}

impl Config {
    /// Loads a file or a directory document by document, going on past a refused one, and
    /// says what became of each ([`Report`]); what `switchyard validate` prints.
    pub fn report(path: &Path) -> Report {
        let files = match config_files(path) {
            Ok(f) => f,
            Err(e) => {
                return Report {
                    documents: vec![(e.file.clone(), String::new(), Outcome::Refused(e.clone()))],
                    config: Err(e),
                };
            }
        };
        let mut documents = Vec::new();
        let mut resources = Vec::new();
        let mut ignored = Vec::new();
        let mut first_refusal = None;
        for file in files {
            let name = file.display().to_string();
            for (label, outcome, resource) in report_file(&name, std::fs::read_to_string(&file)) {
                match &outcome {
                    Outcome::LoadedIgnoring(fields) => ignored.extend(fields.iter().cloned()),
                    Outcome::Skipped(why) => ignored.push(why.clone()),
                    Outcome::Refused(e) if first_refusal.is_none() => {
                        first_refusal = Some(e.clone())
                    }
                    _ => {}
                }
                if let Some(r) = resource {
                    resources.push((name.clone(), r));
                }
                documents.push((name.clone(), label, outcome));
            }
        }
        let config = match first_refusal {
            Some(e) => Err(e),
            None => Config::from_resources(resources).map(|mut c| {
                c.ignored = ignored;
                c
            }),
        };
        Report { documents, config }
    }
}
