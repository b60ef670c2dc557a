//! Pages of the API's lists (`{"items": [...], "next": cursor}`): one page as asked
//! (`--limit`, `--after`), or every page with `--all`.

use serde_json::{Value, json};

use super::http::{Api, CtlError, Query};

/// Most items one page of the API holds.
const MAX_LIMIT: usize = 1000;

/// Which page of a list.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct Paging {
    /// Items per page (the API's default is 100, at most 1000).
    #[arg(long)]
    limit: Option<usize>,
    /// The page after this cursor (the previous page's `next`).
    #[arg(long)]
    after: Option<String>,
    /// Every page, one after the other (1000 items a request unless --limit).
    #[arg(long, conflicts_with = "after")]
    all: bool,
}

/// GETs the list at `path` with `query`: the page asked for, or with `--all` every page
/// joined into one (`next` then null).
pub(super) async fn fetch(
    api: &Api,
    path: &str,
    query: Query,
    paging: &Paging,
) -> Result<Value, CtlError> {
    let limit = match paging.all {
        true => Some(paging.limit.unwrap_or(MAX_LIMIT)),
        false => paging.limit,
    };
    let query = query.opt("limit", limit);
    let mut page = api
        .get(path, &query.clone().opt("after", paging.after.as_deref()))
        .await?;
    if !paging.all {
        return Ok(page);
    }
    let mut items = take_items(&mut page);
    while let Some(next) = page["next"].as_str().map(str::to_owned) {
        page = api
            .get(path, &query.clone().set("after", next.clone()))
            .await?;
        let more = take_items(&mut page);
        // A cursor that does not move would loop forever.
        if more.is_empty() || page["next"].as_str() == Some(next.as_str()) {
            items.extend(more);
            break;
        }
        items.extend(more);
    }
    Ok(json!({ "items": items, "next": null }))
}

fn take_items(page: &mut Value) -> Vec<Value> {
    match page.get_mut("items").map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// The items of a page.
pub(super) fn items(page: &Value) -> &[Value] {
    page["items"].as_array().map_or(&[], Vec::as_slice)
}

/// Where the next page starts, for people: `(more: --after <cursor>)`, or nothing.
pub(super) fn more(page: &Value) -> String {
    match page["next"].as_str() {
        Some(next) => format!(
            "(more: add --after {} for the next page, or --all)\n",
            shell_word(next)
        ),
        None => String::new(),
    }
}

/// A word a shell takes as it is: quoted when it holds anything but plain characters.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    match plain {
        true => text.to_string(),
        false => format!("'{}'", text.replace('\'', r"'\''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_cursor_is_shown_quoted_when_needed() {
        assert_eq!(more(&json!({"items": [], "next": null})), "");
        assert_eq!(
            more(&json!({"items": [], "next": "sensor-9"})),
            "(more: add --after sensor-9 for the next page, or --all)\n"
        );
        assert_eq!(shell_word("a b's"), r"'a b'\''s'");
    }
}
