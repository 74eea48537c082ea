//! `ac:emoticon` to the character it stands for.

use html5ever::Attribute;

/// The emoticon's fallback character: the emoji Confluence stored with it, else the one its
/// emoji id or classic name stands for, else its name between colons.
pub fn emoticon_text(attrs: &[Attribute]) -> String {
    let attr = |name: &str| {
        attrs
            .iter()
            .find(|attr| &*attr.name.local == name)
            .map(|attr| attr.value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    if let Some(fallback) = attr("ac:emoji-fallback")
        && !fallback.starts_with(':')
    {
        return crate::text::escape_markdown(&fallback);
    }
    if let Some(emoji) = attr("ac:emoji-id").and_then(|id| emoji_from_id(&id)) {
        return emoji;
    }
    let name = attr("ac:name").unwrap_or_default();
    match classic_emoticon(&name) {
        Some(ch) => ch.to_owned(),
        None if name.is_empty() => String::new(),
        None => format!(
            ":{}:",
            name.replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                ""
            )
        ),
    }
}

/// `1f642` or `1f468-200d-1f4bb` to the emoji; Confluence also uses ids like `atlassian-check_mark`.
fn emoji_from_id(id: &str) -> Option<String> {
    id.split('-')
        .map(|part| u32::from_str_radix(part, 16).ok().and_then(char::from_u32))
        .collect::<Option<String>>()
        .filter(|emoji| !emoji.is_empty() && !emoji.chars().any(char::is_control))
}

fn classic_emoticon(name: &str) -> Option<&'static str> {
    Some(match name {
        "smile" => "🙂",
        "sad" => "🙁",
        "cheeky" => "😛",
        "laugh" => "😀",
        "wink" => "😉",
        "thumbs-up" => "👍",
        "thumbs-down" => "👎",
        "information" => "ℹ️",
        "tick" => "✅",
        "cross" => "❌",
        "warning" => "⚠️",
        "plus" => "➕",
        "minus" => "➖",
        "question" => "❓",
        "light-on" => "💡",
        "light-off" => "💡",
        "yellow-star" | "red-star" | "green-star" | "blue-star" => "⭐",
        "heart" => "❤️",
        "broken-heart" => "💔",
        _ => return None,
    })
}
