//! A small CPU renderer for egui_kittest snapshots: no GPU, the same
//! pixels on every machine (plain IEEE `f32` arithmetic, no platform maths).
//!
//! It keeps the textures (font atlas and images) that egui sends through
//! [`TestRenderer::handle_delta`], tessellates the frame's shapes with
//! [`egui::Context::tessellate`] and fills each triangle into an
//! [`image::RgbaImage`]:
//!
//! - a pixel is covered when its centre lies inside the triangle;
//!   centres exactly on an edge go to one triangle only (a tie rule on
//!   the edge's direction), so meshes that share edges are not blended twice;
//! - colour and texture coordinates are interpolated barycentrically; the
//!   pixel's colour is texture sample x vertex colour, both premultiplied
//!   and in gamma space, as egui's own painters do;
//! - samples are bilinear (clamped to the edge) unless the texture asks for
//!   nearest filtering;
//! - blending is premultiplied `src + dst * (1 - src.a)`, limited to the
//!   primitive's clip rectangle.
//!
//! Anti-aliasing needs nothing more: egui's tessellator feathers edges.

use egui::epaint::textures::TextureFilter;
use egui::epaint::{ImageData, ImageDelta, Mesh, Primitive, Vertex};
use egui::{Color32, TextureId, TexturesDelta};
use egui_kittest::TestRenderer;
use std::collections::HashMap;

/// A texture: premultiplied texels row by row, and its filter.
struct Texture {
    width: usize,
    height: usize,
    texels: Vec<Color32>,
    nearest: bool,
}

impl Texture {
    fn texel(&self, x: isize, y: isize) -> [f32; 4] {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        rgba(self.texels[y * self.width + x])
    }

    /// The texel colour at texture coordinates `(u, v)` (0..1).
    fn sample(&self, u: f32, v: f32) -> [f32; 4] {
        let x = u * self.width as f32 - 0.5;
        let y = v * self.height as f32 - 0.5;
        if self.nearest {
            return self.texel(x.round() as isize, y.round() as isize);
        }
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as isize, y0 as isize);
        let top = lerp(self.texel(x0, y0), self.texel(x0 + 1, y0), fx);
        let bottom = lerp(self.texel(x0, y0 + 1), self.texel(x0 + 1, y0 + 1), fx);
        lerp(top, bottom, fy)
    }
}

/// Premultiplied RGBA pixels being painted, 0.0-1.0 per channel.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<[f32; 4]>,
}

/// A clip rectangle in whole pixels, `min` inclusive, `max` exclusive.
#[derive(Clone, Copy)]
struct Clip {
    min: [usize; 2],
    max: [usize; 2],
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![[0.0; 4]; width * height],
        }
    }

    /// Fills one triangle (positions already in pixels).
    fn triangle(&mut self, v: [&Vertex; 3], ppp: f32, clip: Clip, tex: &Texture) {
        let p = v.map(|v| [v.pos.x * ppp, v.pos.y * ppp]);
        let mut area = edge(p[0], p[1], p[2]);
        let (mut v, mut p) = (v, p);
        if area == 0.0 || !area.is_finite() {
            return;
        }
        if area < 0.0 {
            v.swap(1, 2);
            p.swap(1, 2);
            area = -area;
        }
        let lo = |i: usize| p.iter().map(|q| q[i]).fold(f32::INFINITY, f32::min);
        let hi = |i: usize| p.iter().map(|q| q[i]).fold(f32::NEG_INFINITY, f32::max);
        let x0 = (lo(0).floor().max(0.0) as usize).max(clip.min[0]);
        let y0 = (lo(1).floor().max(0.0) as usize).max(clip.min[1]);
        let x1 = (hi(0).ceil().max(0.0) as usize).min(clip.max[0]);
        let y1 = (hi(1).ceil().max(0.0) as usize).min(clip.max[1]);
        let edges = [(p[1], p[2]), (p[2], p[0]), (p[0], p[1])];
        let colours = v.map(|v| rgba(v.color));
        for y in y0..y1 {
            for x in x0..x1 {
                let c = [x as f32 + 0.5, y as f32 + 0.5];
                let w = edges.map(|(a, b)| edge(a, b, c));
                if !edges
                    .iter()
                    .zip(w)
                    .all(|(&(a, b), w)| w > 0.0 || (w == 0.0 && owns_edge(a, b)))
                {
                    continue;
                }
                let l = w.map(|w| w / area);
                let u = l[0] * v[0].uv.x + l[1] * v[1].uv.x + l[2] * v[2].uv.x;
                let t = l[0] * v[0].uv.y + l[1] * v[1].uv.y + l[2] * v[2].uv.y;
                let texel = tex.sample(u, t);
                let mut src = [0.0; 4];
                for (k, s) in src.iter_mut().enumerate() {
                    let colour = l[0] * colours[0][k] + l[1] * colours[1][k] + l[2] * colours[2][k];
                    *s = texel[k] * colour;
                }
                let dst = &mut self.pixels[y * self.width + x];
                let keep = 1.0 - src[3];
                for k in 0..4 {
                    dst[k] = (src[k] + dst[k] * keep).clamp(0.0, 1.0);
                }
            }
        }
    }

    fn mesh(&mut self, mesh: &Mesh, ppp: f32, clip: Clip, tex: &Texture) -> Result<(), String> {
        for tri in mesh.indices.chunks_exact(3) {
            let vertex = |i: u32| {
                mesh.vertices.get(i as usize).ok_or_else(|| {
                    format!("mesh index {i} beyond its {} vertices", mesh.vertices.len())
                })
            };
            self.triangle(
                [vertex(tri[0])?, vertex(tri[1])?, vertex(tri[2])?],
                ppp,
                clip,
                tex,
            );
        }
        Ok(())
    }

    /// The picture, with straight (not premultiplied) alpha as PNG wants.
    fn into_image(self) -> image::RgbaImage {
        let mut img = image::RgbaImage::new(self.width as u32, self.height as u32);
        for (out, px) in img.pixels_mut().zip(self.pixels) {
            let [r, g, b, a] = px.map(|c| (c * 255.0).round() as u8);
            out.0 = Color32::from_rgba_premultiplied(r, g, b, a).to_srgba_unmultiplied();
        }
        img
    }
}

/// Twice the signed area of `a b c` (positive when `c` is on the
/// positive side of `a -> b`).
fn edge(a: [f32; 2], b: [f32; 2], c: [f32; 2]) -> f32 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

/// Whether a pixel centre exactly on edge `a -> b` belongs to this
/// triangle. A shared edge runs the other way in the neighbour, so exactly
/// one of the two owns it.
fn owns_edge(a: [f32; 2], b: [f32; 2]) -> bool {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    dy > 0.0 || (dy == 0.0 && dx < 0.0)
}

fn rgba(c: Color32) -> [f32; 4] {
    c.to_array().map(|x| f32::from(x) / 255.0)
}

fn lerp(a: [f32; 4], b: [f32; 4], t: f32) -> [f32; 4] {
    let mut out = [0.0; 4];
    for k in 0..4 {
        out[k] = a[k] + (b[k] - a[k]) * t;
    }
    out
}

/// The CPU renderer; give it to `Harness::builder().renderer(...)`.
#[derive(Default)]
pub struct SoftRenderer {
    textures: HashMap<TextureId, Texture>,
    /// The first texture update that could not be applied (reported by
    /// the next `render`, since `handle_delta` cannot fail).
    broken: Option<String>,
}

impl SoftRenderer {
    /// A renderer with no textures yet.
    pub fn new() -> Self {
        SoftRenderer::default()
    }

    fn set(&mut self, id: TextureId, delta: &ImageDelta) -> Result<(), String> {
        let ImageData::Color(img) = &delta.image;
        let [w, h] = img.size;
        if img.pixels.len() != w * h {
            return Err(format!(
                "texture {id:?}: {} texels for {w}x{h}",
                img.pixels.len()
            ));
        }
        let nearest = delta.options.magnification == TextureFilter::Nearest;
        match delta.pos {
            None => {
                self.textures.insert(
                    id,
                    Texture {
                        width: w,
                        height: h,
                        texels: img.pixels.clone(),
                        nearest,
                    },
                );
            }
            Some([x0, y0]) => {
                let t = self
                    .textures
                    .get_mut(&id)
                    .ok_or_else(|| format!("patch for unknown texture {id:?}"))?;
                if x0 + w > t.width || y0 + h > t.height {
                    return Err(format!("patch {w}x{h} at {x0},{y0} outside texture {id:?}"));
                }
                for row in 0..h {
                    let dst = (y0 + row) * t.width + x0;
                    t.texels[dst..dst + w].copy_from_slice(&img.pixels[row * w..(row + 1) * w]);
                }
                t.nearest = nearest;
            }
        }
        Ok(())
    }

    /// Paints tessellated primitives on a `width` x `height` pixel canvas.
    fn paint(
        &self,
        primitives: &[egui::ClippedPrimitive],
        ppp: f32,
        width: usize,
        height: usize,
    ) -> Result<image::RgbaImage, String> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let mut canvas = Canvas::new(width, height);
        for p in primitives {
            let px = |v: f32, max: usize| ((v * ppp).round().max(0.0) as usize).min(max);
            let clip = Clip {
                min: [px(p.clip_rect.min.x, width), px(p.clip_rect.min.y, height)],
                max: [px(p.clip_rect.max.x, width), px(p.clip_rect.max.y, height)],
            };
            match &p.primitive {
                Primitive::Mesh(mesh) => {
                    let tex = self.textures.get(&mesh.texture_id).ok_or_else(|| {
                        format!("mesh uses unknown texture {:?}", mesh.texture_id)
                    })?;
                    canvas.mesh(mesh, ppp, clip, tex)?;
                }
                Primitive::Callback(_) => {
                    return Err(
                        "paint callbacks need a GPU; the CPU renderer cannot draw them".into(),
                    )
                }
            }
        }
        Ok(canvas.into_image())
    }
}

impl TestRenderer for SoftRenderer {
    fn handle_delta(&mut self, delta: &TexturesDelta) {
        for (id, d) in &delta.set {
            if let Err(e) = self.set(*id, d) {
                self.broken.get_or_insert(e);
            }
        }
        for id in &delta.free {
            self.textures.remove(id);
        }
    }

    fn render(
        &mut self,
        ctx: &egui::Context,
        output: &egui::FullOutput,
    ) -> Result<image::RgbaImage, String> {
        let ppp = ctx.pixels_per_point();
        let size = ctx.content_rect().size() * ppp;
        let primitives = ctx.tessellate(output.shapes.clone(), ppp);
        self.paint(
            &primitives,
            ppp,
            size.x.round() as usize,
            size.y.round() as usize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui::{pos2, Rect};

    /// A renderer with the white 1x1 texture of untextured shapes and a
    /// 2x2 nearest-filtered texture (red, green / blue, white).
    fn renderer() -> SoftRenderer {
        let mut r = SoftRenderer::new();
        let mut delta = TexturesDelta::default();
        let white = egui::ColorImage::new([1, 1], vec![Color32::WHITE]);
        delta.set.push((
            TextureId::default(),
            ImageDelta::full(white, egui::TextureOptions::LINEAR),
        ));
        let quad = egui::ColorImage::new(
            [2, 2],
            vec![Color32::RED, Color32::GREEN, Color32::BLUE, Color32::WHITE],
        );
        delta.set.push((
            TextureId::User(1),
            ImageDelta::full(quad, egui::TextureOptions::NEAREST),
        ));
        r.handle_delta(&delta);
        r
    }

    fn prim(mesh: Mesh, clip: Rect) -> egui::ClippedPrimitive {
        egui::ClippedPrimitive {
            clip_rect: clip,
            primitive: Primitive::Mesh(mesh),
        }
    }

    const ALL: Rect = Rect::EVERYTHING;

    #[test]
    fn a_known_triangle_covers_the_pixels_inside_it() {
        let mut m = Mesh::default();
        let c = Color32::from_rgb(10, 200, 30);
        m.colored_vertex(pos2(0.0, 0.0), c);
        m.colored_vertex(pos2(10.0, 0.0), c);
        m.colored_vertex(pos2(0.0, 10.0), c);
        m.add_triangle(0, 1, 2);
        let img = renderer().paint(&[prim(m, ALL)], 1.0, 12, 12).unwrap();
        // Centres with x + y + 1 < 10 are inside (45 pixels); those on the
        // hypotenuse (x + y = 9, 10 pixels) belong to it by the tie rule;
        // beyond it nothing is painted.
        let painted = img.pixels().filter(|p| p.0[3] != 0).count();
        assert_eq!(painted, 55);
        assert_eq!(img.get_pixel(0, 9).0, [10, 200, 30, 255]);
        assert_eq!(img.get_pixel(2, 2).0, [10, 200, 30, 255]);
        assert_eq!(img.get_pixel(0, 8).0, [10, 200, 30, 255]);
        assert_eq!(img.get_pixel(9, 9).0, [0, 0, 0, 0]);
        assert_eq!(img.get_pixel(11, 0).0, [0, 0, 0, 0]);
    }

    #[test]
    fn shared_edges_are_painted_once_and_blending_is_premultiplied() {
        // A half-transparent square of two triangles over an opaque one:
        // the diagonal must not be blended twice.
        let mut m = Mesh::default();
        m.add_colored_rect(
            Rect::from_min_max(pos2(0.0, 0.0), pos2(8.0, 8.0)),
            Color32::BLACK,
        );
        let half = Color32::from_rgba_premultiplied(100, 0, 0, 128);
        let n = m.vertices.len() as u32;
        for p in [
            pos2(0.0, 0.0),
            pos2(8.0, 0.0),
            pos2(8.0, 8.0),
            pos2(0.0, 8.0),
        ] {
            m.colored_vertex(p, half);
        }
        m.add_triangle(n, n + 1, n + 2);
        m.add_triangle(n, n + 2, n + 3);
        let img = renderer().paint(&[prim(m, ALL)], 1.0, 8, 8).unwrap();
        // 100 + 0 * (1 - 128/255) = 100 on every pixel, diagonal included.
        assert!(
            img.pixels().all(|p| p.0 == [100, 0, 0, 255]),
            "{:?}",
            img.get_pixel(3, 3)
        );
    }

    #[test]
    fn the_clip_rect_limits_painting() {
        let mut m = Mesh::default();
        m.add_colored_rect(
            Rect::from_min_max(pos2(0.0, 0.0), pos2(10.0, 10.0)),
            Color32::WHITE,
        );
        let clip = Rect::from_min_max(pos2(2.0, 3.0), pos2(6.0, 5.0));
        let img = renderer().paint(&[prim(m, clip)], 1.0, 10, 10).unwrap();
        for (x, y, p) in img.enumerate_pixels() {
            let inside = (2..6).contains(&x) && (3..5).contains(&y);
            assert_eq!(p.0[3] == 255, inside, "pixel {x},{y}");
        }
        // Twice the pixels per point: positions and clip scale together.
        let mut m = Mesh::default();
        m.add_colored_rect(
            Rect::from_min_max(pos2(0.0, 0.0), pos2(10.0, 10.0)),
            Color32::WHITE,
        );
        let img = renderer().paint(&[prim(m, clip)], 2.0, 20, 20).unwrap();
        assert_eq!(img.pixels().filter(|p| p.0[3] == 255).count(), 8 * 4);
    }

    #[test]
    fn a_textured_quad_shows_texels_times_vertex_colour() {
        let mut m = Mesh::with_texture(TextureId::User(1));
        let rect = Rect::from_min_max(pos2(0.0, 0.0), pos2(4.0, 4.0));
        let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
        m.add_rect_with_uv(rect, uv, Color32::from_rgb(255, 255, 128));
        let img = renderer().paint(&[prim(m, ALL)], 1.0, 4, 4).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0, 255]);
        assert_eq!(img.get_pixel(3, 0).0, [0, 255, 0, 255]);
        assert_eq!(img.get_pixel(0, 3).0, [0, 0, 128, 255]);
        assert_eq!(img.get_pixel(3, 3).0, [255, 255, 128, 255]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut m = Mesh::with_texture(TextureId::User(9));
        let rect = Rect::from_min_max(pos2(0.0, 0.0), pos2(2.0, 2.0));
        m.add_rect_with_uv(rect, rect, Color32::WHITE);
        assert!(renderer().paint(&[prim(m, ALL)], 1.0, 4, 4).is_err());
        let m = Mesh {
            indices: vec![0, 1, 7],
            ..Mesh::default()
        };
        assert!(renderer().paint(&[prim(m, ALL)], 1.0, 4, 4).is_err());
        let mut r = renderer();
        let mut delta = TexturesDelta::default();
        let patch = egui::ColorImage::new([2, 2], vec![Color32::RED; 4]);
        delta.set.push((
            TextureId::User(1),
            ImageDelta::partial([1, 1], patch, egui::TextureOptions::NEAREST),
        ));
        r.handle_delta(&delta);
        assert!(
            r.paint(&[], 1.0, 4, 4).is_err(),
            "a patch outside its texture"
        );
    }
}
