"""Oracles: plain transcriptions of the paper code's attacks (JiachengZ01/PART, craft_ae.py:
`part_pgd`, `mma` with category 'Madry', `mm_loss`, `mm_loss_train`), kept as close to the
original as runs on a CPU. Changes: `.cuda()` and `Variable` removed, and the random draws are
arguments (`noise`), so a test can hand both implementations the same start. Test code only: the
package never imports this.
"""

from __future__ import annotations

import torch
from torch import nn


def element_wise_clamp(eta, epsilon):
    eta_clamped = torch.where(eta > epsilon, epsilon, eta)
    eta_clamped = torch.where(eta < -epsilon, -epsilon, eta_clamped)
    return eta_clamped


def part_pgd(model, X, y, weighted_eps, noise, num_steps=10, step_size=2 / 255):
    """craft_ae.part_pgd; `noise` is its torch.FloatTensor(...).uniform_(-epsilon, epsilon)."""
    X_pgd = X.detach() + noise
    X_pgd.requires_grad_(True)
    for _ in range(num_steps):
        model.zero_grad()
        with torch.enable_grad():
            loss = nn.CrossEntropyLoss()(model(X_pgd), y)
        loss.backward()
        eta = step_size * X_pgd.grad.data.sign()
        X_pgd = X_pgd.data + eta
        eta = element_wise_clamp(X_pgd.data - X.data, weighted_eps)
        X_pgd = torch.clamp(X.data + eta, 0, 1.0).requires_grad_(True)
    return X_pgd.detach()


def mm_loss_train(output, target, target_choose, num_classes=10):
    target_onehot = torch.zeros(target.size() + (num_classes,))
    target_onehot.scatter_(1, target.unsqueeze(1), 1.)
    real = (target_onehot * output).sum(1)
    target_onehot = torch.zeros(target_choose.size() + (num_classes,))
    target_onehot.scatter_(1, target_choose.unsqueeze(1), 1.)
    other = (target_onehot * output).sum(1)
    return other - real


def mm_loss(output, target, target_choose, confidence=50, num_classes=10):
    target_onehot = torch.zeros(target.size() + (num_classes,))
    target_onehot.scatter_(1, target.unsqueeze(1), 1.)
    real = (target_onehot * output).sum(1)
    target_onehot = torch.zeros(target_choose.size() + (num_classes,))
    target_onehot.scatter_(1, target_choose.unsqueeze(1), 1.)
    other = (target_onehot * output).sum(1)
    loss = -torch.clamp(real - other + confidence, min=0.)
    return torch.sum(loss)


def mma(model, data, target, epsilon, step_size, num_steps, noise, k, num_classes):
    """craft_ae.mma with category 'Madry' and rand_init=True; `noise` is its
    np.random.uniform(-epsilon, epsilon, data.shape)."""
    model.eval()
    x_adv = torch.clamp(data.detach() + noise, 0.0, 1.0)
    logits = model(data)
    target_onehot = torch.zeros(target.size() + (len(logits[0]),))
    target_onehot.scatter_(1, target.unsqueeze(1), 1.)
    index = torch.argsort(logits - 10000 * target_onehot)[:, num_classes - k:]
    x_adv_set, loss_set = [], []
    for i in range(k):
        x_adv_0 = x_adv.clone().detach()
        for _ in range(num_steps):
            x_adv_0.requires_grad_()
            output1 = model(x_adv_0)
            model.zero_grad()
            with torch.enable_grad():
                loss_adv0 = mm_loss(output1, target, index[:, i], num_classes=num_classes)
            loss_adv0.backward()
            eta = step_size * x_adv_0.grad.sign()
            x_adv_0 = x_adv_0.detach() + eta
            x_adv_0 = torch.min(torch.max(x_adv_0, data - epsilon), data + epsilon)
            x_adv_0 = torch.clamp(x_adv_0, 0.0, 1.0)
        pipy = mm_loss_train(model(x_adv_0), target, index[:, i], num_classes=num_classes)
        loss_set.append(pipy.view(len(pipy), -1))
        x_adv_set.append(x_adv_0)
    loss_pipy = torch.cat(loss_set, 1)
    index_choose = torch.argsort(loss_pipy)[:, -1]
    adv_final = torch.zeros(x_adv.size())
    for i in range(len(index_choose)):
        adv_final[i, :, :, :] = x_adv_set[index_choose[i]][i]
    return adv_final.detach()
