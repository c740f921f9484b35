//! Color conversions between hue/saturation, RGB, CIE xy and color temperature, as Home
//! Assistant's `color_util` does them, so that an MQTT light reports the same `hs_color`,
//! `rgb_color` and `xy_color` triple as a light of any other integration.

/// Rounds to `decimals` places.
fn round_to(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// RGB channels (0..=255, fractional allowed) to hue (degrees), saturation and value (percent).
fn rgb_to_hsv(rgb: [f64; 3]) -> [f64; 3] {
    let [r, g, b] = rgb.map(|channel| channel / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    if max == min {
        return [0.0, 0.0, round_to(max * 100.0, 3)];
    }
    let delta = max - min;
    let saturation = delta / max;
    let (rc, gc, bc) = ((max - r) / delta, (max - g) / delta, (max - b) / delta);
    let sixths = if r == max {
        bc - gc
    } else if g == max {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let hue = (sixths / 6.0).rem_euclid(1.0);
    [
        round_to(hue * 360.0, 3),
        round_to(saturation * 100.0, 3),
        round_to(max * 100.0, 3),
    ]
}

/// RGB to hue/saturation.
pub(crate) fn rgb_to_hs(rgb: [f64; 3]) -> [f64; 2] {
    let [hue, saturation, _] = rgb_to_hsv(rgb);
    [hue, saturation]
}

/// Hue/saturation to RGB at full value.
pub(crate) fn hs_to_rgb(hs: [f64; 2]) -> [u8; 3] {
    let hue = hs[0] / 360.0;
    let saturation = (hs[1] / 100.0).clamp(0.0, 1.0);
    let channels = if saturation == 0.0 {
        [1.0; 3]
    } else {
        let sector = (hue * 6.0).floor();
        let fraction = hue * 6.0 - sector;
        let p = 1.0 - saturation;
        let q = 1.0 - saturation * fraction;
        let t = 1.0 - saturation * (1.0 - fraction);
        match (sector as i64).rem_euclid(6) {
            0 => [1.0, t, p],
            1 => [q, 1.0, p],
            2 => [p, 1.0, t],
            3 => [p, q, 1.0],
            4 => [t, p, 1.0],
            _ => [1.0, p, q],
        }
    };
    channels.map(to_channel)
}

/// A 0..=1 fraction as a 0..=255 channel, rounded.
fn to_channel(fraction: f64) -> u8 {
    (fraction * 255.0).round().clamp(0.0, 255.0) as u8
}

/// RGB to CIE xy (Wide RGB D65), rounded to 3 decimals; black is `(0, 0)`.
pub(crate) fn rgb_to_xy(rgb: [f64; 3]) -> [f64; 2] {
    if rgb.iter().sum::<f64>() <= 0.0 {
        return [0.0, 0.0];
    }
    let [r, g, b] = rgb.map(|channel| {
        let linear = (channel / 255.0).clamp(0.0, 1.0);
        if linear > 0.04045 {
            ((linear + 0.055) / 1.055).powf(2.4)
        } else {
            linear / 12.92
        }
    });
    let x = r * 0.664_511 + g * 0.154_324 + b * 0.162_028;
    let y = r * 0.283_881 + g * 0.668_433 + b * 0.047_685;
    let z = r * 0.000_088 + g * 0.072_310 + b * 0.986_039;
    let sum = x + y + z;
    [round_to(x / sum, 3), round_to(y / sum, 3)]
}

/// CIE xy to RGB at full brightness (channels truncated, as Home Assistant does).
pub(crate) fn xy_to_rgb(xy: [f64; 2]) -> [u8; 3] {
    let [vx, mut vy] = xy;
    if vy == 0.0 {
        vy = 1e-11;
    }
    let luminance = 1.0;
    let x = luminance / vy * vx;
    let z = luminance / vy * (1.0 - vx - vy);
    let channels = [
        x * 1.656_492 - luminance * 0.354_851 - z * 0.255_038,
        -x * 0.707_196 + luminance * 1.655_397 + z * 0.036_152,
        x * 0.051_713 - luminance * 0.121_364 + z * 1.011_530,
    ]
    .map(|linear| {
        let corrected = if linear <= 0.003_130_8 {
            12.92 * linear
        } else {
            1.055 * linear.powf(1.0 / 2.4) - 0.055
        };
        corrected.max(0.0)
    });
    let max = channels.iter().copied().fold(0.0, f64::max);
    let scale = if max > 1.0 { max } else { 1.0 };
    channels.map(|channel| (channel / scale * 255.0).clamp(0.0, 255.0) as u8)
}

/// CIE xy to hue/saturation.
pub(crate) fn xy_to_hs(xy: [f64; 2]) -> [f64; 2] {
    rgb_to_hs(xy_to_rgb(xy).map(f64::from))
}

/// Hue/saturation to CIE xy.
pub(crate) fn hs_to_xy(hs: [f64; 2]) -> [f64; 2] {
    rgb_to_xy(hs_to_rgb(hs).map(f64::from))
}

/// A color temperature's RGB (Tanner Helland's approximation, 1000 K to 40000 K).
pub(crate) fn kelvin_to_rgb(kelvin: u32) -> [f64; 3] {
    let hundreds = f64::from(kelvin.clamp(1000, 40_000)) / 100.0;
    let red = if hundreds <= 66.0 {
        255.0
    } else {
        329.698_727_446 * (hundreds - 60.0).powf(-0.133_204_759_2)
    };
    let green = if hundreds <= 66.0 {
        99.470_802_586_1 * hundreds.ln() - 161.119_568_166_1
    } else {
        288.122_169_528_3 * (hundreds - 60.0).powf(-0.075_514_849_2)
    };
    let blue = if hundreds >= 66.0 {
        255.0
    } else if hundreds <= 19.0 {
        0.0
    } else {
        138.517_731_223_1 * (hundreds - 10.0).ln() - 305.044_792_730_7
    };
    [red, green, blue].map(|channel| channel.clamp(0.0, 255.0))
}

/// A color temperature as hue/saturation.
pub(crate) fn kelvin_to_hs(kelvin: u32) -> [f64; 2] {
    rgb_to_hs(kelvin_to_rgb(kelvin))
}

/// The correlated color temperature of a CIE xy color (McCamy's approximation).
pub(crate) fn xy_to_kelvin(xy: [f64; 2]) -> u32 {
    let n = (xy[0] - 0.3320) / (0.1858 - xy[1]);
    let kelvin = 437.0 * n.powi(3) + 3601.0 * n.powi(2) + 6861.0 * n + 5517.0;
    if kelvin.is_finite() {
        kelvin.clamp(1.0, f64::from(u32::MAX)) as u32
    } else {
        1
    }
}

/// Mireds to kelvin and back (the same formula both ways), as Home Assistant: floored.
pub(crate) fn mired_kelvin(value: u32) -> u32 {
    1_000_000 / value.max(1)
}

/// Rounds an xy coordinate for a state attribute.
pub(crate) fn round6(value: f64) -> f64 {
    round_to(value, 6)
}

/// Rounds a hue or saturation for a state attribute.
pub(crate) fn round3(value: f64) -> f64 {
    round_to(value, 3)
}
