"""Train LeNet-5 on MNIST (or Fashion-MNIST) with fastconv, on the CPU.

    python examples/train_lenet.py                        # full MNIST, else the bundled sample
    python examples/train_lenet.py --variant d2l --optimizer sgd --lr 0.9
    python examples/train_lenet.py --dataset fashion-mnist --epochs 10 --save lenet.npz --plot curves.png
    python examples/train_lenet.py --epochs 8 --checkpoint run.ckpt      # one after every epoch
    python examples/train_lenet.py --epochs 8 --checkpoint run.ckpt --resume run.ckpt   # after a crash

Full MNIST is downloaded into the cache (FASTCONV_DATA, else ~/.cache/fastconv) on first use;
offline, with nothing cached, the bundled 4000/1000-image MNIST sample is used instead and a
one-line notice says so. The last line printed is ``test accuracy: 0.xxxx``.
"""
import argparse
import os
import time

import fastconv
from fastconv import datasets, nn, optim

# Per optimizer and variant: a learning rate that trains well in a few epochs (measured on the
# bundled sample: modern + adam reaches 0.95 test accuracy by epoch 3-4).
DEFAULT_LR = {("sgd", "modern"): 0.02, ("sgd", "d2l"): 0.1, ("adam", "modern"): 2e-3, ("adam", "d2l"): 5e-3}
LR_DECAY = 0.8  # per epoch (ExponentialLR), as the seeds decayed it
# Inputs are standardized, (x - mean) / std, with each training set's pixel statistics (the
# usual torchvision constants): the same learning rates then suit both datasets. A model saved
# with --save expects inputs standardized the same way.
MEAN_STD = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=["modern", "d2l"], default="modern",
                        help="modern: ReLU + max pool; d2l: sigmoid + average pool (default: modern)")
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    parser.add_argument("--data", metavar="DIR",
                        help="a directory of the four IDX files (default: download into the cache)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float,
                        help=f"initial learning rate, decayed x{LR_DECAY} per epoch (default: per optimizer "
                             f"and variant, {DEFAULT_LR})")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="adam",
                        help="sgd has momentum 0.9 (default: adam)")
    parser.add_argument("--threads", type=int, help="OpenMP threads (default: OMP_NUM_THREADS or all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="PATH",
                        help="save the trained weights (.npz); they expect standardized inputs, see MEAN_STD")
    parser.add_argument("--plot", metavar="PATH", help="save loss and accuracy curves (PNG, needs matplotlib)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="write a checkpoint (model, optimizer, scheduler, RNG, epoch) after every epoch")
    parser.add_argument("--resume", metavar="PATH",
                        help="continue from a --checkpoint file, with the same other options: the run "
                             "ends bitwise as one that was never interrupted")
    args = parser.parse_args(argv)
    # refused here, with a usage message, rather than after loading data or training
    for name, low in (("epochs", 0), ("batch_size", 1), ("threads", 1), ("seed", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"argument --{name.replace('_', '-')}: must be at least {low}, got {value}")
    if args.lr is not None and not 0 < args.lr < float("inf"):
        parser.error(f"argument --lr: must be a positive finite number, got {args.lr}")
    if args.resume is not None and not os.path.isfile(args.resume):
        parser.error(f"argument --resume: no file {args.resume}")
    for name in ("save", "plot", "checkpoint"):
        directory = os.path.dirname(os.path.abspath(getattr(args, name) or "."))
        if not os.path.isdir(directory):
            parser.error(f"argument --{name}: directory {directory} does not exist")
    return args


def standardize(images, dataset):
    """(images - mean) / std with the dataset's constants (:data:`MEAN_STD`), float32."""
    mean, std = MEAN_STD[dataset]
    return ((images - mean) / std).astype(images.dtype, copy=False)


def main(argv=None):
    args = parse_args(argv)
    fastconv.manual_seed(args.seed)
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    data = datasets.load_dataset(args.dataset, root=args.data, fallback_to_sample=True)
    if data.is_sample:
        print(f"notice: using the {data.description}")
    else:
        print(f"data: {data.description}")
    (x_train, y_train), (x_test, y_test) = data.train, data.test
    x_train, x_test = standardize(x_train, args.dataset), standardize(x_test, args.dataset)

    model = nn.lenet(args.variant)
    if args.variant == "d2l":  # d2l's init_cnn: Glorot for sigmoid layers
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer, args.variant]
    if args.optimizer == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        optimizer = optim.Adam(model.parameters(), lr=lr)
    scheduler = optim.ExponentialLR(optimizer, gamma=LR_DECAY)
    print(f"LeNet ({args.variant}), {args.optimizer} lr={lr:g} (x{LR_DECAY}/epoch), batch {args.batch_size}, "
          f"{args.epochs} epochs, {fastconv.get_num_threads()} threads")

    if args.resume:
        print(f"resuming from {args.resume}")
    start = time.perf_counter()
    history = model.fit(x_train, y_train, loss=nn.CrossEntropyLoss(), optimizer=optimizer,
                        epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), verbose=2, scheduler=scheduler,
                        checkpoint=args.checkpoint, resume=args.resume)
    print(f"trained in {time.perf_counter() - start:.1f} s")
    if args.save:
        model.save(args.save)
        print(f"saved weights to {args.save}")
    if args.plot:
        try:
            print(f"saved curves to {history.plot(args.plot)}")
        except ImportError as exc:
            print(f"no plot: {exc}")
    print(f"test accuracy: {model.evaluate(x_test, y_test)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
