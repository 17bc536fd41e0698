//! The box label: an SVG to print and stick on the box at the factory.
//!
//! It carries the product name, the box name when known, the claim code in large type and a
//! QR code of [`claim_uri`], so the technician can type the code or scan it. Sizes are in
//! millimetres (a 100 × 40 mm label); the code is stretched to a fixed width so it fits
//! whatever monospace font the printer has.

use abri_factory::ClaimCode;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

const WIDTH_MM: f64 = 100.0;
const HEIGHT_MM: f64 = 40.0;
const MARGIN_MM: f64 = 3.0;
const QR_MM: f64 = HEIGHT_MM - 2.0 * MARGIN_MM;

#[derive(Debug, thiserror::Error)]
#[error("cannot make the label's QR code: {0}")]
pub struct LabelError(String);

/// What the QR code says: `abri:claim?code=<code>&box=<name>` (`&box=` only when known).
pub fn claim_uri(code: &ClaimCode, box_name: Option<&str>) -> String {
    match box_name {
        Some(name) => format!("abri:claim?code={}&box={name}", code.as_str()),
        None => format!("abri:claim?code={}", code.as_str()),
    }
}

/// Renders the whole label as a standalone SVG document.
pub fn render_label(code: &ClaimCode, box_name: Option<&str>) -> Result<String, LabelError> {
    let qr = QrCode::with_error_correction_level(claim_uri(code, box_name), EcLevel::M)
        .map_err(|e| LabelError(e.to_string()))?;
    let modules = qr.width() + 8; // The renderer adds a 4-module quiet zone on each side.
    let qr_svg = qr
        .render::<svg::Color<'_>>()
        .module_dimensions(1, 1)
        .quiet_zone(true)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .build();
    // Nest the renderer's <svg> (without its XML declaration) and scale it to QR_MM.
    let nested = qr_svg
        .find("<svg")
        .map(|start| &qr_svg[start..])
        .ok_or_else(|| LabelError("the QR renderer produced no <svg> element".into()))?;
    let scale = QR_MM / modules as f64;
    let text_x = MARGIN_MM + QR_MM + 4.0;
    let text_width = WIDTH_MM - text_x - MARGIN_MM;
    let box_line = match box_name {
        Some(name) => format!(
            r#"<text x="{text_x}" y="19" font-size="5" font-family="{SANS}">{}</text>"#,
            escape(name)
        ),
        None => String::new(),
    };
    Ok(format!(
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH_MM}mm" height="{HEIGHT_MM}mm" viewBox="0 0 {WIDTH_MM} {HEIGHT_MM}">
<title>Abri claim code label</title>
<rect x="0" y="0" width="{WIDTH_MM}" height="{HEIGHT_MM}" fill="#fff"/>
<g transform="translate({MARGIN_MM} {MARGIN_MM}) scale({scale})">{nested}</g>
<text x="{text_x}" y="11" font-size="8" font-weight="bold" font-family="{SANS}">Abri</text>
{box_line}
<text x="{text_x}" y="28" font-size="3" font-family="{SANS}">Claim code / Code d'activation</text>
<text id="claim-code" x="{text_x}" y="35" font-size="5" font-weight="bold" font-family="{MONO}" textLength="{text_width}" lengthAdjust="spacingAndGlyphs">{code}</text>
</svg>
"##,
        code = escape(code.as_str()),
    ))
}

const SANS: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
const MONO: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_shows_the_code_the_name_and_a_qr_code() {
        let code = ClaimCode::generate();
        let svg = render_label(&code, Some("backup-abcd")).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert_eq!(svg.matches("<?xml").count(), 1, "one XML declaration");
        assert!(svg.contains(&format!(">{}</text>", code.as_str())), "{svg}");
        assert!(svg.contains(">backup-abcd</text>"));
        assert!(svg.contains(">Abri</text>"));
        // The QR modules are drawn as one path of rectangles.
        let path = svg.find("<path").expect("a QR path");
        let d = &svg[path..];
        assert!(d.contains("d=\"M") && d.matches('h').count() > 50, "{d}");
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn label_without_a_box_name() {
        let code = ClaimCode::generate();
        let svg = render_label(&code, None).unwrap();
        assert!(svg.contains(code.as_str()));
        assert!(!svg.contains("backup-"));
    }

    #[test]
    fn claim_uri_names_the_code_and_the_box() {
        let code = ClaimCode::parse("abcd-efgh-ijkm-npqr").unwrap();
        assert_eq!(
            claim_uri(&code, Some("backup-abcd")),
            "abri:claim?code=abcd-efgh-ijkm-npqr&box=backup-abcd"
        );
        assert_eq!(
            claim_uri(&code, None),
            "abri:claim?code=abcd-efgh-ijkm-npqr"
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b>&\"c"), "a&lt;b&gt;&amp;&quot;c");
    }
}
