// Thumbnails with sharp: the spec's standard sizes, the nearest one at least as large as asked,
// never upscaled; made once per source bytes and stored (media_thumbnails).
import fsp from 'node:fs/promises';
import type { Metadata } from 'sharp';
import { MatrixError } from '../http/errors.ts';

export type ThumbnailMethod = 'crop' | 'scale';

export interface ThumbnailSize { width: number; height: number; method: ThumbnailMethod }

/** The sizes the spec says servers SHOULD produce (content_repo.md, "Thumbnails"), as Synapse's defaults. */
export const THUMBNAIL_SIZES: readonly ThumbnailSize[] = [
  { width: 32, height: 32, method: 'crop' },
  { width: 96, height: 96, method: 'crop' },
  { width: 320, height: 240, method: 'scale' },
  { width: 640, height: 480, method: 'scale' },
  { width: 800, height: 600, method: 'scale' },
];

/** The types sharp thumbnails here (Synapse's defaults, less BMP/TIFF which browsers show poorly). */
export const THUMBNAILABLE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
const ANIMATABLE_TYPES = new Set(['image/gif', 'image/webp']);

/** Decompression bombs: an image of more pixels than this is not decoded (Synapse's max_image_pixels). */
export const MAX_IMAGE_PIXELS = 32_000_000;

type Sharp = typeof import('sharp')['default'];
let loading: Promise<Sharp> | undefined;
/** sharp (libvips) is loaded on the first thumbnail: ~250 ms and ~19 MB a server that makes none never pays. */
function loadSharp(): Promise<Sharp> {
  return (loading ??= import('sharp').then(({ default: sharp }) => {
    // No libvips operation cache: thumbnails are made once, and the cache would hold files and memory.
    sharp.cache(false);
    return sharp;
  }));
}

/** The standard size of `method` for a request: the smallest that covers it, else the largest. */
export function selectSize(width: number, height: number, method: ThumbnailMethod): ThumbnailSize {
  const sizes = THUMBNAIL_SIZES.filter((s) => s.method === method).sort((a, b) => a.width * a.height - b.width * b.height);
  return sizes.find((s) => s.width >= width && s.height >= height) ?? sizes[sizes.length - 1]!;
}

export interface SourceImage {
  width: number;
  /** One frame's height. */
  height: number;
  pages: number;
  format: string;
}

const cannotThumbnail = (why: string) => new MatrixError(400, 'M_UNKNOWN', `Cannot generate a thumbnail for this media: ${why}`);

/**
 * Reads the image's header. Not an image, a corrupt one, or one too large to decode safely is an
 * error a client can act on (400 / 413), never a 500.
 */
export async function inspect(file: string): Promise<SourceImage> {
  const sharp = await loadSharp();
  let meta: Metadata;
  try {
    meta = await sharp(file, { limitInputPixels: false, animated: true }).metadata();
  } catch {
    throw cannotThumbnail('the image cannot be read');
  }
  const width = meta.width ?? 0;
  const height = meta.pageHeight ?? meta.height ?? 0;
  if (!width || !height) throw cannotThumbnail('the image has no size');
  if (width * height > MAX_IMAGE_PIXELS) throw new MatrixError(413, 'M_TOO_LARGE', `The image is over ${MAX_IMAGE_PIXELS} pixels`);
  return { width, height, pages: meta.pages ?? 1, format: meta.format ?? '' };
}

/**
 * Whether a thumbnail asked with `animated` keeps the frames. Every frame is decoded for it, so the
 * pixel bound covers all of them together; an animation too large for it gets its first frame.
 */
export function keepsFrames(sourceType: string, image: SourceImage, animated: boolean): boolean {
  return animated && ANIMATABLE_TYPES.has(sourceType) && image.pages > 1 && image.width * image.height * image.pages <= MAX_IMAGE_PIXELS;
}

export interface MadeThumbnail { contentType: string; animated: boolean }

/**
 * Writes a thumbnail of `source` at `size` to `target` (then fsynced). `animated` keeps the frames of
 * an animated GIF or WebP; otherwise the first frame is used.
 */
export async function makeThumbnail(source: string, sourceType: string, image: SourceImage, size: ThumbnailSize, animated: boolean, target: string): Promise<MadeThumbnail> {
  const sharp = await loadSharp();
  const keepFrames = keepsFrames(sourceType, image, animated);
  // failOn 'error' refuses truncated data instead of guessing.
  const pipeline = sharp(source, { animated: keepFrames, limitInputPixels: MAX_IMAGE_PIXELS, failOn: 'error' });
  if (!keepFrames) pipeline.rotate(); // EXIF orientation
  pipeline.resize(size.width, size.height, { fit: size.method === 'crop' ? 'cover' : 'inside', withoutEnlargement: true });
  let contentType: string;
  if (keepFrames && image.format === 'gif') { pipeline.gif(); contentType = 'image/gif'; }
  else if (keepFrames) { pipeline.webp(); contentType = 'image/webp'; }
  else if (sourceType === 'image/jpeg') { pipeline.jpeg({ quality: 80 }); contentType = 'image/jpeg'; }
  else { pipeline.png(); contentType = 'image/png'; }
  try {
    await pipeline.toFile(target);
  } catch {
    await fsp.rm(target, { force: true });
    throw cannotThumbnail('the image cannot be decoded');
  }
  const handle = await fsp.open(target, 'r+');
  try { await handle.sync(); } finally { await handle.close(); }
  return { contentType, animated: keepFrames };
}
