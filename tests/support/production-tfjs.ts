// Tests run TensorFlow.js as the Node processes do (node/backend.ts): in production mode, so its
// advert for tfjs-node does not bury the test output.
import * as tf from '@tensorflow/tfjs';

tf.enableProdMode();
