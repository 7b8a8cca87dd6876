//! A tenant's own look: display name, logo, accent colour and stylesheet,
//! each validated before it is stored or shown.

/// The largest logo accepted, in bytes.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;
/// The largest stylesheet accepted, in bytes.
pub const MAX_CSS_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrandingError {
    #[error("a display name is 1 to 100 characters without control characters")]
    DisplayName,
    #[error("an accent colour is #rgb or #rrggbb")]
    AccentColor,
    #[error("a logo is a PNG, JPEG, GIF or WebP image of at most 256 KiB")]
    Logo,
    #[error("a stylesheet is UTF-8 text of at most 64 KiB")]
    Stylesheet,
}

/// What a tenant changed of the default look.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Branding {
    pub display_name: Option<String>,
    /// `#rgb` or `#rrggbb`, validated.
    pub accent_color: Option<String>,
    pub logo: Option<Logo>,
    pub css: Option<String>,
}

impl std::fmt::Debug for Branding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Branding")
            .field("display_name", &self.display_name)
            .field("accent_color", &self.accent_color)
            .field(
                "logo",
                &self.logo.as_ref().map(|l| (l.content_type, l.bytes.len())),
            )
            .field("css", &self.css.as_ref().map(String::len))
            .finish()
    }
}

/// A logo image and its media type, detected from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

pub fn parse_display_name(name: &str) -> Result<String, BrandingError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control)
    {
        return Err(BrandingError::DisplayName);
    }
    Ok(trimmed.to_owned())
}

pub fn parse_accent_color(color: &str) -> Result<String, BrandingError> {
    let hex = color.strip_prefix('#').ok_or(BrandingError::AccentColor)?;
    if !matches!(hex.len(), 3 | 6) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BrandingError::AccentColor);
    }
    Ok(format!("#{}", hex.to_ascii_lowercase()))
}

/// Accepts raster images only, recognised by their signature: an SVG could
/// carry script, and a declared type is not to be trusted.
pub fn parse_logo(bytes: Vec<u8>) -> Result<Logo, BrandingError> {
    if bytes.is_empty() || bytes.len() > MAX_LOGO_BYTES {
        return Err(BrandingError::Logo);
    }
    let content_type = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        "image/gif"
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        return Err(BrandingError::Logo);
    };
    Ok(Logo {
        bytes,
        content_type,
    })
}

/// A stylesheet is served as a file of its own, under a Content-Security-Policy
/// that lets it load nothing from elsewhere, so it needs only to be text.
pub fn parse_css(bytes: Vec<u8>) -> Result<String, BrandingError> {
    if bytes.len() > MAX_CSS_BYTES {
        return Err(BrandingError::Stylesheet);
    }
    String::from_utf8(bytes).map_err(|_| BrandingError::Stylesheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(parse_accent_color("#0A7").unwrap(), "#0a7");
        assert_eq!(parse_accent_color("#00aa77").unwrap(), "#00aa77");
        for bad in ["0a7", "#0a", "#0a7;}", "#gggggg", "red"] {
            assert!(parse_accent_color(bad).is_err(), "{bad}");
        }
        assert!(parse_display_name("  Acme Corp ").is_ok());
        assert!(parse_display_name("").is_err());
        assert!(parse_display_name("a\nb").is_err());
        assert_eq!(
            parse_logo(b"\x89PNG\r\n\x1a\nrest".to_vec())
                .unwrap()
                .content_type,
            "image/png"
        );
        assert!(parse_logo(b"<svg onload=alert(1)>".to_vec()).is_err());
        assert!(parse_logo(vec![0xFF; MAX_LOGO_BYTES + 1]).is_err());
        assert!(parse_css(vec![0xFF, 0xFE]).is_err());
        assert!(parse_css(b"body { color: red }".to_vec()).is_ok());
    }
}

/// What a page needs to know of a tenant's branding, without the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrandingSummary {
    pub display_name: Option<String>,
    pub has_logo: bool,
    /// An accent colour or a stylesheet: the tenant's stylesheet is served.
    pub has_stylesheet: bool,
    /// Changes with every update, to bust caches of the logo and stylesheet.
    pub version: i64,
}
